//! Medication orders (HL7 RDE^O11/O25, FHIR MedicationRequest) and their dispenses (HL7
//! RDS^O13, FHIR MedicationDispense).

use serde::{Deserialize, Serialize};

use super::{Coded, Decimal, OrderStatus, Practitioner, Priority, Timestamp};

/// An amount with its unit: a dose (RXE-3/RXE-5), a quantity to dispense (RXE-10/RXE-11) or
/// dispensed (RXD-4/RXD-5), an ingredient's amount (RXC-3/RXC-4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quantity {
    /// The amount, as sent.
    pub value: Decimal,
    /// The upper bound of a range dose (RXE-4 give amount maximum), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<Decimal>,
    /// The unit (a UCUM code, a local code, or text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Coded>,
}

/// One component of a compound or an infusion (HL7 RXC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MedicationComponent {
    /// `A` additive or `B` base (RXC-1, HL7 table 0166), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_type: Option<String>,
    /// What the component is (RXC-2).
    pub code: Coded,
    /// How much of it (RXC-3 amount, RXC-4 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Quantity>,
}

/// What a pharmacy handed out for a medication order (HL7 RXD).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedicationDispense {
    /// The dispense counter of the order (RXD-1), e.g. `1` for the first fill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// What was dispensed (RXD-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medication: Option<Coded>,
    /// When (RXD-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispensed_at: Option<Timestamp>,
    /// How much (RXD-4 actual dispense amount, RXD-5 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Quantity>,
    /// The dosage form (RXD-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dosage_form: Option<Coded>,
    /// The pharmacy's prescription number (RXD-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prescription_number: Option<String>,
    /// Refills left after this dispense (RXD-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refills_remaining: Option<u32>,
    /// Who dispensed (RXD-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispenser: Option<Practitioner>,
    /// Notes (RXD-9 dispense notes, then the NTE after the RXD), one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A medication order: a prescription for one patient (HL7 ORC + RXE; FHIR
/// MedicationRequest), with its dispense when the event is one (RXD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedicationOrder {
    /// Placer order number (ORC-2, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_number: Option<String>,
    /// Filler order number (ORC-3, else the prescription number RXE-15 / RXD-7; EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_number: Option<String>,
    /// Placer group number (ORC-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_number: Option<String>,
    /// The order control code as sent (ORC-1), e.g. `NW`, `DC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Status after this event (ORC-5, else implied by ORC-1).
    pub status: OrderStatus,
    /// The medication (RXE-2 give code; RXD-2 for a dispense without RXE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medication: Option<Coded>,
    /// The dose per administration (RXE-3 minimum, RXE-4 maximum, RXE-5 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dose: Option<Quantity>,
    /// The dosage form (RXE-6), e.g. tablet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dosage_form: Option<Coded>,
    /// The route (RXR-1 of the first RXR), e.g. `PO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Coded>,
    /// The administration site (RXR-2 of the first RXR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Coded>,
    /// How often (TQ1-3 repeat pattern, else RXE-1.2 interval), e.g. `BID`, `Q6H`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Coded>,
    /// Start of the treatment (TQ1-7, else RXE-1.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// End of the treatment (TQ1-8, else RXE-1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// Priority (TQ1-9, else RXE-1.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Instructions to the patient or nurse (TQ1-11 text instruction, else RXE-7 label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Quantity to dispense (RXE-10 amount, RXE-11 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Quantity>,
    /// Refills allowed (RXE-12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refills: Option<u32>,
    /// The pharmacy's prescription number (RXE-15, else RXD-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prescription_number: Option<String>,
    /// Why it is given (RXE-27 give indication, first repetition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Coded>,
    /// Who prescribed it (ORC-12 ordering provider, else RXE-13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prescriber: Option<Practitioner>,
    /// When it was prescribed (ORC-9 transaction time, else RXE-32 original order time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_at: Option<Timestamp>,
    /// The components of a compound or infusion (RXC after the RXE), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<MedicationComponent>,
    /// Free-text notes (NTE after the ORC or RXE, one per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The dispense this event reports (RDS^O13 RXD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispense: Option<MedicationDispense>,
}

impl MedicationOrder {
    /// An order with these numbers and status and nothing else.
    pub fn new(placer: Option<String>, filler: Option<String>, status: OrderStatus) -> Self {
        MedicationOrder {
            placer_number: placer,
            filler_number: filler,
            group_number: None,
            control: None,
            status,
            medication: None,
            dose: None,
            dosage_form: None,
            route: None,
            site: None,
            frequency: None,
            start: None,
            end: None,
            priority: None,
            instructions: None,
            quantity: None,
            refills: None,
            prescription_number: None,
            reason: None,
            prescriber: None,
            ordered_at: None,
            components: Vec::new(),
            notes: None,
            dispense: None,
        }
    }
}
