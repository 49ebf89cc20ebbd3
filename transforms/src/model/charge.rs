//! Charges and payments (HL7 DFT FT1, FHIR ChargeItem, Buktor `payment.*`).

use serde::{Deserialize, Serialize};

use super::{Coded, Decimal, Location, Practitioner, Timestamp};

/// Kind of financial transaction (FT1-6, HL7 table 0017).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionType {
    /// `CG` charge.
    Charge,
    /// `CD` credit (gives money back to the account, e.g. a charge reversal).
    Credit,
    /// `PY` payment.
    Payment,
    /// `AJ` adjustment.
    Adjustment,
    /// Any other code (kept in [`Charge::transaction_type_code`]).
    Other,
}

/// Whether a charge stands or was taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Posted to the account.
    Posted,
    /// Reversed (a credit, or a negative charge).
    Reversed,
}

/// Outcome of a payment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentResult {
    /// Money received.
    Success,
    /// The attempt failed (declined card, gateway error).
    Failure,
}

/// A payment outcome with the reason and the payment reference when sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentOutcome {
    /// Success or failure.
    pub result: PaymentResult,
    /// Why it failed, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Payment reference (receipt or gateway transaction id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// One financial transaction line (HL7 FT1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// Transaction id (FT1-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// Transaction batch id (FT1-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Patient account number (PID-18 CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Visit number (PV1-19 CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number: Option<String>,
    /// When the service happened (FT1-4, start of the range in v2.5+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_date: Option<Timestamp>,
    /// When it was posted (FT1-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posting_date: Option<Timestamp>,
    /// Kind of transaction (FT1-6).
    pub transaction_type: TransactionType,
    /// FT1-6 as sent.
    pub transaction_type_code: String,
    /// The charge item (FT1-7 transaction code; text from FT1-7.2, else FT1-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Coded>,
    /// Quantity (FT1-10); absent means 1 to most billing systems, but we do not invent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Decimal>,
    /// Extended amount (FT1-11 CP-1 MO-1), else unit amount × quantity is NOT computed: the
    /// HIS total is authoritative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
    /// Unit amount (FT1-12 CP-1 MO-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_amount: Option<Decimal>,
    /// ISO 4217 currency (FT1-11 CP-1.2 / MO-2, else FT1-12's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Posted or reversed.
    pub status: ChargeStatus,
    /// Payment outcome, for payments (see the DFT mapping for the rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentOutcome>,
    /// Department (FT1-13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<Coded>,
    /// Where the service was performed (FT1-16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Who performed it (FT1-20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performed_by: Option<Practitioner>,
    /// Who ordered it (FT1-21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_by: Option<Practitioner>,
    /// Procedure code (FT1-25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<Coded>,
    /// Why the service was rendered: the diagnoses of the line (FT1-19, every repetition; in
    /// DFT^P11 also the DG1 of the FT1's group), without duplicates; FHIR `ChargeItem.reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnoses: Vec<Coded>,
}
