//! OpsPort Healthcare Integration API (the vendor's integration API document): upserts of clinics,
//! doctors, patients and appointments, one object to `/api/healthcare/{kind}` or a JSON array to
//! the plural path.
//!
//! [`render`] turns a canonical event into upserts in dependency order: for an appointment the
//! clinic and the doctor come first, then the patient, then the appointment, so OpsPort can
//! resolve `clinicCode`/`doctorCode`/`patientNo`.
//!
//! OpsPort finds a patient by `patientNo`, `nationalID` or `mobile` + `name`; a patient without
//! a patient number goes out with whichever of the others it has, and so does the reference of
//! its appointments (see `docs/ASSUMPTIONS.md`). Telephone numbers are normalised to E.164
//! ([`e164`]), since OpsPort matches `mobile` as text. Appointment statuses come from one table
//! ([`OpsportOptions::statuses`], checked by [`OpsportOptions::validate`]); a status the table
//! does not name is a mapping error, never a canonical name on the wire. [`bulk`] folds single items of one kind into
//! one plural request. The wire structs are shared with `from_json::opsport`, which accepts the
//! same shapes from desktop clinic apps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MappingError, Rendered};
use crate::mapping::FieldMapping;
use crate::model::{
    Appointment, AppointmentStatus, ContactUse, Event, EventKind, Gender, IdentifierKind, Location,
    Patient, Practitioner, Timestamp,
};

/// `clinic` upsert body (OpsPort looks clinics up by `code`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportClinic {
    /// Display name.
    pub name: String,
    /// Clinic code, the upsert key.
    pub code: String,
    /// Clinic number / room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Specialisation, e.g. `Pediatrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialization: Option<String>,
    /// `Outpatient`, `Inpatient`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinic_type: Option<String>,
    /// Branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// Building / wing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// General-ledger account number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_no: Option<String>,
    /// Cost centre number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center_no: Option<String>,
    /// Postal address as one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the clinic is active.
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// `doctor` upsert body (OpsPort looks doctors up by `code` or `licenseNumber`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportDoctor {
    /// Display name.
    pub name: String,
    /// Name in the second language (Arabic).
    #[serde(rename = "aName", default, skip_serializing_if = "Option::is_none")]
    pub a_name: Option<String>,
    /// Doctor code, the upsert key.
    pub code: String,
    /// Branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `Male` / `Female`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// Medical registration number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medical_reg_number: Option<String>,
    /// National id number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_number: Option<String>,
    /// General-ledger account number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_no: Option<String>,
    /// Cost centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Specialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialization: Option<String>,
    /// Licence number (second upsert key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_number: Option<String>,
    /// Whether the doctor is active.
    #[serde(default = "yes")]
    pub is_active: bool,
    /// Codes of the clinics the doctor works in.
    #[serde(default)]
    pub clinic_codes: Vec<String>,
}

/// `patient` upsert body (OpsPort looks patients up by `patientNo`, `nationalID` or mobile + name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportPatient {
    /// Full name.
    pub name: String,
    /// Patient number (MRN); absent for a patient known by national id or mobile + name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_no: Option<String>,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Middle / father's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Mobile number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// `Male` / `Female`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// National id number.
    #[serde(
        rename = "nationalID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub national_id: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Home or other phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Blood type, e.g. `O+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blood_type: Option<String>,
    /// Whether the patient file is active.
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// `appointment` upsert body (OpsPort looks appointments up by patient, date and start time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportAppointment {
    /// Patient number (MRN), the patient reference of the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_no: Option<String>,
    /// Without a patient number: the patient's national id (OpsPort's second patient key).
    #[serde(
        rename = "nationalID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub national_id: Option<String>,
    /// Without a patient number or national id: the patient's mobile (with `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// Without a patient number or national id: the patient's full name (with `mobile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Doctor code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor_code: Option<String>,
    /// Clinic code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinic_code: Option<String>,
    /// Day of the appointment at midnight, `YYYY-MM-DDT00:00:00`.
    pub date: String,
    /// Start time `HH:MM:SS`.
    pub time_from: String,
    /// End time `HH:MM:SS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to: Option<String>,
    /// OpsPort status name (`Confirmed`, `Cancelled`, ...), see [`OpsportOptions::statuses`].
    pub status: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

fn yes() -> bool {
    true
}

/// OpsPort destination options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsportOptions {
    /// Canonical appointment status (`booked`, `arrived`, `completed`, `cancelled`, `no_show`)
    /// -> OpsPort status name.
    #[serde(default = "default_statuses")]
    pub statuses: BTreeMap<String, String>,
    /// Whether an appointment event also upserts its clinic and doctor first (default true).
    #[serde(default = "yes")]
    pub upsert_references: bool,
    /// Field mapping per kind (`clinic`, `doctor`, `patient`, `appointment`), applied last.
    #[serde(default)]
    pub mapping: BTreeMap<String, FieldMapping>,
    /// Country calling code put in front of national telephone numbers (`0502222222` ->
    /// `+966502222222`) when normalising to E.164 (default `966`).
    #[serde(default = "default_country_code")]
    pub default_country_code: String,
}

impl Default for OpsportOptions {
    fn default() -> Self {
        Self {
            statuses: default_statuses(),
            upsert_references: true,
            mapping: BTreeMap::new(),
            default_country_code: default_country_code(),
        }
    }
}

fn default_country_code() -> String {
    "966".into()
}

/// The canonical statuses an SIU can give an appointment (S12-S14 booked or SCH-25, S15 and
/// S16 cancelled, S17 entered in error, S26 no-show): each must have an OpsPort status.
pub const REQUIRED_STATUSES: [&str; 6] = [
    "booked",
    "arrived",
    "completed",
    "cancelled",
    "entered_in_error",
    "no_show",
];

impl OpsportOptions {
    /// The OpsPort status for a canonical status name.
    ///
    /// # Errors
    /// [`MappingError::InvalidValue`] at `appointment.status` when the table has none: a raw
    /// canonical name is never sent.
    pub fn status_for(&self, canonical: &str) -> Result<&str, MappingError> {
        self.statuses
            .get(canonical)
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| MappingError::InvalidValue {
                path: "appointment.status".into(),
                reason: format!("no OpsPort status for '{canonical}' in options.statuses"),
            })
    }

    /// The status that closes a slot: the one of `cancelled`.
    ///
    /// # Errors
    /// As [`OpsportOptions::status_for`].
    pub fn closed_status(&self) -> Result<&str, MappingError> {
        self.status_for("cancelled")
    }
}

impl OpsportOptions {
    /// Every problem in the options, with its key path (for `switchboard check`).
    pub fn validate(&self) -> Vec<crate::mapping::ConfigProblem> {
        let mut problems = crate::mapping::validate_status_table("statuses", self.statuses.keys());
        for required in REQUIRED_STATUSES {
            if !self.statuses.contains_key(required) {
                problems.push(crate::mapping::ConfigProblem {
                    key: format!("statuses.{required}"),
                    message: "missing: every status an SIU can give needs an OpsPort status".into(),
                });
            }
        }
        for (k, v) in &self.statuses {
            if v.trim().is_empty() {
                problems.push(crate::mapping::ConfigProblem {
                    key: format!("statuses.{k}"),
                    message: "must not be empty".into(),
                });
            } else if crate::mapping::APPOINTMENT_STATUSES.contains(&v.as_str()) {
                problems.push(crate::mapping::ConfigProblem {
                    key: format!("statuses.{k}"),
                    message: format!(
                        "'{v}' is a canonical status name, not an OpsPort status (such as Cancelled)"
                    ),
                });
            }
        }
        if self.default_country_code.is_empty()
            || self.default_country_code.len() > 3
            || !self
                .default_country_code
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            problems.push(crate::mapping::ConfigProblem {
                key: "default_country_code".into(),
                message: "must be 1 to 3 digits, such as 966".into(),
            });
        }
        for (kind, mapping) in &self.mapping {
            if !KINDS.contains(&kind.as_str()) {
                problems.push(crate::mapping::ConfigProblem {
                    key: format!("mapping.{kind}"),
                    message: format!("unknown kind; expected one of {}", KINDS.join(", ")),
                });
            }
            problems.extend(mapping.validate_at(&format!("mapping.{kind}")));
        }
        problems
    }
}

/// The kinds of OpsPort upsert, in the order an appointment needs them.
pub const KINDS: [&str; 4] = ["clinic", "doctor", "patient", "appointment"];

/// Default canonical appointment status -> OpsPort status table. Only `Confirmed` is in the
/// seed; the others are assumptions (`docs/ASSUMPTIONS.md`). A deleted appointment (S17,
/// `entered_in_error`) closes its slot like a cancellation.
pub fn default_statuses() -> BTreeMap<String, String> {
    [
        ("booked", "Confirmed"),
        ("arrived", "Arrived"),
        ("completed", "Completed"),
        ("cancelled", "Cancelled"),
        ("entered_in_error", "Cancelled"),
        ("no_show", "NoShow"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Single-item path of a kind: `/api/healthcare/{kind}`.
pub fn single_path(kind: &str) -> String {
    format!("/api/healthcare/{kind}")
}

/// Bulk path of a kind: `/api/healthcare/{kind}s` (`clinics`, `doctors`, ...).
pub fn bulk_path(kind: &str) -> String {
    format!("/api/healthcare/{kind}s")
}

/// Folds single items of one kind into one bulk request (`POST /api/healthcare/{kind}s` with a
/// JSON array). The idempotency key is derived from the items' keys, in order.
///
/// Returns `None` for an empty slice.
///
/// # Errors
/// [`MappingError::MixedBulk`] when the items are not all of the same kind.
pub fn bulk(items: &[Rendered]) -> Result<Option<Rendered>, MappingError> {
    let Some(first) = items.first() else {
        return Ok(None);
    };
    if let Some(odd) = items.iter().find(|i| i.kind != first.kind) {
        return Err(MappingError::MixedBulk {
            expected: first.kind.clone(),
            found: odd.kind.clone(),
        });
    }
    let mut key_parts: Vec<&str> = vec!["opsport-bulk", &first.kind];
    key_parts.extend(items.iter().map(|i| i.idempotency_key.as_str()));
    Ok(Some(Rendered {
        path: bulk_path(&first.kind),
        body: serde_json::Value::Array(items.iter().map(|i| i.body.clone()).collect()),
        idempotency_key: crate::model::stable_id(&key_parts),
        kind: format!("{}s", first.kind),
    }))
}

/// Canonical gender -> OpsPort text (`Male`, `Female`, `Other`, `Unknown`).
pub fn gender_text(g: Gender) -> &'static str {
    match g {
        Gender::Male => "Male",
        Gender::Female => "Female",
        Gender::Other | Gender::Ambiguous => "Other",
        Gender::Unknown | Gender::NotApplicable => "Unknown",
    }
}

/// Canonical appointment status name (the snake_case of the model's JSON form).
pub fn status_key(s: AppointmentStatus) -> &'static str {
    match s {
        AppointmentStatus::Pending => "pending",
        AppointmentStatus::Waitlisted => "waitlisted",
        AppointmentStatus::Booked => "booked",
        AppointmentStatus::Arrived => "arrived",
        AppointmentStatus::Completed => "completed",
        AppointmentStatus::Cancelled => "cancelled",
        AppointmentStatus::NoShow => "no_show",
        AppointmentStatus::EnteredInError => "entered_in_error",
        AppointmentStatus::Blocked => "blocked",
    }
}

/// The clinic upsert for a canonical location, or `None` without a location code. Every
/// field the location carries goes out; `isActive` is false only when the location says so.
pub fn clinic(location: &Location) -> Option<OpsportClinic> {
    let code = location.code.clone()?;
    Some(OpsportClinic {
        name: location.name.clone().unwrap_or_else(|| code.clone()),
        code,
        number: location.room.clone(),
        specialization: location
            .specialisation
            .as_ref()
            .and_then(|c| c.label())
            .map(str::to_owned),
        clinic_type: location.location_type.clone(),
        branch: location.branch.clone(),
        floor: location.floor.clone(),
        location: location.building.clone(),
        account_no: location.account_number.clone(),
        cost_center_no: location.cost_centre.clone(),
        address: location.address.as_ref().and_then(address_line),
        phone: location.phone.clone(),
        email: location.email.clone(),
        is_active: location.active.unwrap_or(true),
    })
}

/// A postal address as one line: street lines, city, state, postal code, country, joined
/// with `, ` (the seed's `"Olaya Street, Riyadh"`); `None` when empty.
fn address_line(a: &crate::model::Address) -> Option<String> {
    let parts: Vec<&str> = a
        .lines
        .iter()
        .chain(&a.district)
        .chain(&a.city)
        .chain(&a.state)
        .chain(&a.postal_code)
        .chain(&a.country)
        .map(String::as_str)
        .filter(|p| !p.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The doctor upsert for a canonical practitioner, or `None` without a code or licence number.
/// Every field the practitioner carries goes out; `clinic_code` (the clinic of the appointment
/// that names the doctor) is added to the practitioner's own clinic codes.
pub fn doctor(p: &Practitioner, clinic_code: Option<&str>) -> Option<OpsportDoctor> {
    let code = p.code.clone().or_else(|| p.licence_number.clone())?;
    let name = p.name.full();
    let mut clinic_codes = p.clinic_codes.clone();
    if let Some(c) = clinic_code.filter(|c| !clinic_codes.iter().any(|k| k == c)) {
        clinic_codes.push(c.to_owned());
    }
    Some(OpsportDoctor {
        name: if name.is_empty() { code.clone() } else { name },
        a_name: p
            .alternate_name
            .as_ref()
            .map(|n| n.full())
            .filter(|n| !n.is_empty()),
        code,
        branch: p.branch.clone(),
        gender: p.gender.map(|g| gender_text(g).to_owned()),
        date_of_birth: p
            .birth_date
            .as_ref()
            .map(|d| d.naive_date_time().format("%Y-%m-%d").to_string()),
        medical_reg_number: p.registration_number.clone(),
        id_number: p.national_id.clone(),
        account_no: p.account_number.clone(),
        cost_center: p.cost_centre.clone(),
        description: p.description.clone(),
        email: p.email.clone(),
        phone: p.phone.clone(),
        license_number: p.licence_number.clone(),
        specialization: p
            .specialisation
            .as_ref()
            .and_then(|c| c.label())
            .map(str::to_owned),
        is_active: p.active.unwrap_or(true),
        clinic_codes,
    })
}

/// The identifier OpsPort gets as `patientNo`: the MRN, else the patient number, else the first
/// identifier that is not a national id or passport (a HIS file number of another type).
pub fn patient_number(p: &Patient) -> Option<&crate::model::Identifier> {
    p.identifier_of(IdentifierKind::Mrn)
        .or_else(|| p.identifier_of(IdentifierKind::PatientNumber))
        .or_else(|| {
            p.identifiers.iter().find(|i| {
                !matches!(
                    i.kind,
                    IdentifierKind::NationalId | IdentifierKind::Passport
                )
            })
        })
}

/// A telephone number in E.164 (`+966502222222`): separators dropped, `00` read as `+`, and
/// a national number (leading trunk `0`, or no prefix at all) given `country_code`. A text
/// that is not a telephone number is returned trimmed, as it was.
///
/// ```
/// use transforms::dest::opsport::e164;
/// assert_eq!(e164("+966 50 2222222", "966"), "+966502222222");
/// assert_eq!(e164("0502222222", "966"), "+966502222222");
/// assert_eq!(e164("00966-50-222-2222", "966"), "+966502222222");
/// assert_eq!(e164("(050) 222 2222", "966"), "+966502222222");
/// assert_eq!(e164("ask reception", "966"), "ask reception");
/// ```
pub fn e164(number: &str, country_code: &str) -> String {
    let trimmed = number.trim();
    let plus = trimmed.starts_with('+');
    let separators = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')' | '/');
    if !trimmed
        .chars()
        .all(|c| c.is_ascii_digit() || separators(c) || c == '+')
        || trimmed.matches('+').count() > usize::from(plus)
    {
        return trimmed.to_owned();
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("{country_code}{rest}")
    } else if digits.starts_with(country_code) && digits.len() > 10 {
        digits
    } else {
        format!("{country_code}{digits}")
    };
    if (8..=15).contains(&international.len()) && !international.starts_with('0') {
        format!("+{international}")
    } else {
        trimmed.to_owned()
    }
}

/// The patient upsert for a canonical patient, telephone numbers in E.164.
///
/// # Errors
/// [`MappingError::MissingField`] when OpsPort could not find the patient again: no
/// [`patient_number`], no national id and not both a mobile and a name.
pub fn patient(p: &Patient, opts: &OpsportOptions) -> Result<OpsportPatient, MappingError> {
    let patient_no = patient_number(p).map(|i| i.value.clone());
    let cc = opts.default_country_code.as_str();
    let mobile = p
        .phones
        .iter()
        .find(|ph| ph.use_ == Some(ContactUse::Mobile))
        .or_else(|| p.phones.first())
        .map(|ph| e164(&ph.number, cc));
    let phone = p
        .phones
        .iter()
        .map(|ph| (ph, e164(&ph.number, cc)))
        .find(|(ph, n)| ph.use_ != Some(ContactUse::Mobile) && Some(n) != mobile.as_ref())
        .map(|(_, n)| n);
    let n = &p.name;
    let national_id = p
        .identifier_of(IdentifierKind::NationalId)
        .map(|i| i.value.clone());
    let name = n.full();
    if patient_no.is_none() && national_id.is_none() && (mobile.is_none() || name.is_empty()) {
        return Err(super::missing(
            "patient.identifiers[mrn|national_id] or mobile and name",
        ));
    }
    Ok(OpsportPatient {
        name,
        patient_no,
        first_name: n.given.clone(),
        second_name: n.middle.clone(),
        last_name: n.family.clone(),
        mobile,
        date_of_birth: p.birth_date.as_ref().map(Timestamp::date_iso),
        gender: p.gender.map(gender_text).map(str::to_owned),
        national_id,
        email: p.email.clone(),
        phone,
        blood_type: p.blood_type.clone(),
        is_active: true,
    })
}

/// How an appointment names its patient: `patientNo`, else `nationalID`, else `mobile` + `name`
/// (OpsPort's patient lookup order).
fn patient_reference(
    a: &Appointment,
    patient: Option<&Patient>,
    opts: &OpsportOptions,
) -> Result<OpsportAppointment, MappingError> {
    let mut out = OpsportAppointment::default();
    let by_number = patient.and_then(patient_number).or_else(|| {
        a.patient.as_ref().filter(|i| {
            !matches!(
                i.kind,
                IdentifierKind::NationalId | IdentifierKind::Passport
            )
        })
    });
    if let Some(i) = by_number {
        out.patient_no = Some(i.value.clone());
        return Ok(out);
    }
    let national = patient
        .and_then(|p| p.identifier_of(IdentifierKind::NationalId))
        .or_else(|| {
            a.patient
                .as_ref()
                .filter(|i| i.kind == IdentifierKind::NationalId)
        });
    if let Some(i) = national {
        out.national_id = Some(i.value.clone());
        return Ok(out);
    }
    if let Some(p) = patient {
        let body = self::patient(p, opts)?;
        if let (Some(m), false) = (body.mobile, body.name.is_empty()) {
            out.mobile = Some(m);
            out.name = Some(body.name);
            return Ok(out);
        }
    }
    Err(super::missing("appointment.patient"))
}

/// The key OpsPort finds an appointment by: its patient reference, day and start time.
pub fn slot_key(a: &OpsportAppointment) -> String {
    let who = a
        .patient_no
        .as_ref()
        .map(|n| format!("no:{n}"))
        .or_else(|| a.national_id.as_ref().map(|n| format!("nid:{n}")))
        .unwrap_or_else(|| {
            format!(
                "mob:{}|{}",
                a.mobile.as_deref().unwrap_or(""),
                a.name.as_deref().unwrap_or("")
            )
        });
    format!("{who}|{}|{}", a.date, a.time_from)
}

/// The appointment upsert for a canonical appointment.
///
/// # Errors
/// [`MappingError::MissingField`] without a patient OpsPort can find or a start time with a time
/// of day; [`MappingError::InvalidValue`] for a status the status table does not name.
pub fn appointment(
    a: &Appointment,
    patient: Option<&Patient>,
    opts: &OpsportOptions,
) -> Result<OpsportAppointment, MappingError> {
    let reference = patient_reference(a, patient, opts)?;
    let start = a
        .start
        .as_ref()
        .ok_or_else(|| super::missing("appointment.start"))?;
    let time_from = start.time_iso().ok_or_else(|| MappingError::InvalidValue {
        path: "appointment.start".into(),
        reason: "a time of day is required".into(),
    })?;
    let status = status_key(if a.status == AppointmentStatus::Pending {
        AppointmentStatus::Booked
    } else {
        a.status
    });
    Ok(OpsportAppointment {
        doctor_code: a
            .practitioner
            .as_ref()
            .and_then(|p| p.code.clone().or_else(|| p.licence_number.clone())),
        clinic_code: a.location.as_ref().and_then(|l| l.code.clone()),
        date: format!("{}T00:00:00", start.date_iso()),
        time_from,
        time_to: a.end.as_ref().and_then(Timestamp::time_iso),
        status: opts.status_for(status)?.to_owned(),
        notes: a
            .notes
            .clone()
            .or_else(|| a.reason.as_ref().and_then(|r| r.label()).map(str::to_owned)),
        ..reference
    })
}

/// The key OpsPort finds a patient by, for idempotency keys.
fn patient_key(p: &OpsportPatient) -> String {
    p.patient_no
        .clone()
        .or_else(|| p.national_id.clone())
        .unwrap_or_else(|| format!("{}|{}", p.mobile.as_deref().unwrap_or(""), p.name))
}

fn item<T: Serialize>(
    event: &Event,
    kind: &'static str,
    key: &str,
    body: &T,
    opts: &OpsportOptions,
) -> Result<Rendered, MappingError> {
    let mut body = serde_json::to_value(body).map_err(|e| MappingError::InvalidValue {
        path: kind.into(),
        reason: e.to_string(),
    })?;
    if let Some(m) = opts.mapping.get(kind) {
        m.apply(&mut body);
    }
    Ok(Rendered {
        path: single_path(kind),
        body,
        idempotency_key: crate::model::stable_id(&["opsport", kind, &event.id, key]),
        kind: kind.to_owned(),
    })
}

/// Renders a canonical event as OpsPort upserts, in the order they must be sent.
///
/// - patient and encounter events (ADT, but a deleted person or a bed status): the patient
///   upsert (for a merge of several patients, one per surviving patient; for a swap or link,
///   both);
/// - appointment events: clinic, doctor (when they have codes and `upsert_references`), the
///   patient when the event carries one, then the appointment (cancellations are an upsert
///   with the cancelled status, since OpsPort has no delete);
/// - location and practitioner master events: the clinic or doctor upsert with every field
///   the record has (`isActive` false when deactivated or deleted, since OpsPort has no
///   delete);
/// - other events: nothing (an empty list, not an error).
///
/// # Errors
/// [`MappingError`] when a required field (patient number, appointment start) is missing.
pub fn render(event: &Event, opts: &OpsportOptions) -> Result<Vec<Rendered>, MappingError> {
    let mut out = Vec::new();
    match event.kind {
        EventKind::PatientRegistered
        | EventKind::PatientUpdated
        | EventKind::PatientMerged
        | EventKind::EncounterAdmitted
        | EventKind::EncounterPreadmitted
        | EventKind::EncounterDischarged
        | EventKind::EncounterCancelled
        | EventKind::EncounterDischargeCancelled
        | EventKind::EncounterTransferred
        | EventKind::EncounterTransferCancelled
        | EventKind::EncounterClassChanged
        | EventKind::PatientDeparted
        | EventKind::PatientArrived
        | EventKind::PatientTrackingCancelled
        | EventKind::EncounterAdmitPending
        | EventKind::EncounterTransferPending
        | EventKind::EncounterDischargePending
        | EventKind::EncounterPendingCancelled
        | EventKind::PatientsSwapped
        | EventKind::LeaveOfAbsenceStarted
        | EventKind::LeaveOfAbsenceEnded
        | EventKind::LeaveOfAbsenceCancelled
        | EventKind::EncounterDeleted
        | EventKind::PatientsLinked
        | EventKind::PatientsUnlinked
        | EventKind::AccountMerged
        | EventKind::VisitMerged
        | EventKind::RecordMoved
        | EventKind::IdentifierChanged
        | EventKind::AttendingDoctorChanged
        | EventKind::ConsultingDoctorChanged
        | EventKind::DoctorChangeCancelled
        | EventKind::AllergiesUpdated => {
            // A merge of several patients upserts every surviving patient, in message order;
            // a swap or link both patients.
            let further = event.additional_merges.iter().map(|m| &m.patient);
            let other = event.other_patient.iter().map(|o| &o.patient);
            for p in event.patient.iter().chain(further).chain(other) {
                let body = patient(p, opts)?;
                out.push(item(event, "patient", &patient_key(&body), &body, opts)?);
            }
        }
        EventKind::AppointmentBooked
        | EventKind::AppointmentRescheduled
        | EventKind::AppointmentModified
        | EventKind::AppointmentCancelled
        | EventKind::AppointmentDiscontinued
        | EventKind::AppointmentDeleted
        | EventKind::AppointmentNoShow
        | EventKind::AppointmentResourceAdded
        | EventKind::AppointmentResourceModified
        | EventKind::AppointmentResourceCancelled
        | EventKind::AppointmentResourceDiscontinued
        | EventKind::AppointmentResourceDeleted => {
            let a = event
                .appointment
                .as_ref()
                .ok_or_else(|| super::missing("appointment"))?;
            let body = appointment(a, event.patient.as_ref(), opts)?;
            let clinic_code = a.location.as_ref().and_then(|l| l.code.as_deref());
            if opts.upsert_references {
                if let Some(c) = a.location.as_ref().and_then(clinic) {
                    out.push(item(event, "clinic", &c.code.clone(), &c, opts)?);
                }
                if let Some(d) = a.practitioner.as_ref().and_then(|p| doctor(p, clinic_code)) {
                    out.push(item(event, "doctor", &d.code.clone(), &d, opts)?);
                }
            }
            // The appointment may name its patient by identifier only; upsert the patient
            // file when the event carries one with a patient number.
            if let Some(Ok(p)) = event.patient.as_ref().map(|p| patient(p, opts)) {
                out.push(item(event, "patient", &patient_key(&p), &p, opts)?);
            }
            out.push(item(event, "appointment", &slot_key(&body), &body, opts)?);
        }
        EventKind::OrderPlaced
        | EventKind::OrderCancelled
        | EventKind::OrderUpdated
        | EventKind::ResultReported
        | EventKind::ChargePosted
        | EventKind::ChargeReversed
        | EventKind::StudyAvailable
        | EventKind::ScheduleUpdated
        | EventKind::ScheduleDeactivated
        // OpsPort has no delete, and a bed or a blocked slot is no patient or appointment.
        | EventKind::PatientDeleted
        | EventKind::BedStatusUpdated
        | EventKind::SlotBlocked
        | EventKind::SlotOpened
        // OpsPort has no services.
        | EventKind::ServiceCreated
        | EventKind::ServiceUpdated
        | EventKind::ServiceDeactivated
        | EventKind::ServiceDeleted
        // Nor medications or prescriptions (docs/MAPPING.md, medication orders).
        | EventKind::MedicationOrderCreated
        | EventKind::MedicationOrderUpdated
        | EventKind::MedicationOrderCancelled
        | EventKind::MedicationDispensed => {}
        // Master data: OpsPort has no delete, so a deleted clinic or doctor is upserted
        // inactive, like a deactivated one.
        EventKind::LocationCreated
        | EventKind::LocationUpdated
        | EventKind::LocationDeactivated
        | EventKind::LocationDeleted => {
            let l = event
                .location
                .as_ref()
                .ok_or_else(|| super::missing("location"))?;
            let mut c = clinic(l).ok_or_else(|| super::missing("location.code"))?;
            if matches!(
                event.kind,
                EventKind::LocationDeactivated | EventKind::LocationDeleted
            ) {
                c.is_active = false;
            }
            out.push(item(event, "clinic", &c.code.clone(), &c, opts)?);
        }
        EventKind::PractitionerCreated
        | EventKind::PractitionerUpdated
        | EventKind::PractitionerDeactivated
        | EventKind::PractitionerDeleted => {
            let p = event
                .practitioners
                .first()
                .ok_or_else(|| super::missing("practitioners"))?;
            let mut d = doctor(p, None).ok_or_else(|| super::missing("practitioners.code"))?;
            if matches!(
                event.kind,
                EventKind::PractitionerDeactivated | EventKind::PractitionerDeleted
            ) {
                d.is_active = false;
            }
            out.push(item(event, "doctor", &d.code.clone(), &d, opts)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Event {
        let path = format!(
            "{}/../fixtures/model/_dest_inputs/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture exists");
        serde_json::from_str(&text).expect("fixture is an event")
    }

    #[test]
    fn appointment_upserts_clinic_and_doctor_first() {
        let out = render(&fixture("siu_s12_booked"), &OpsportOptions::default()).expect("renders");
        let kinds: Vec<&str> = out.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["clinic", "doctor", "patient", "appointment"]);
        assert_eq!(out[3].path, "/api/healthcare/appointment");
        assert_eq!(out[3].body["date"], json!("2026-06-15T00:00:00"));
        assert_eq!(out[3].body["timeFrom"], json!("10:30:00"));
        assert_eq!(out[3].body["status"], json!("Confirmed"));
    }

    #[test]
    fn every_closing_trigger_gets_a_status_from_the_table_never_a_canonical_name() {
        let opts = OpsportOptions::default();
        assert!(opts.validate().is_empty(), "{:?}", opts.validate());
        for (kind, status, want) in [
            (
                EventKind::AppointmentCancelled,
                AppointmentStatus::Cancelled,
                "Cancelled",
            ),
            (
                EventKind::AppointmentDiscontinued,
                AppointmentStatus::Cancelled,
                "Cancelled",
            ),
            (
                EventKind::AppointmentDeleted,
                AppointmentStatus::EnteredInError,
                "Cancelled",
            ),
            (
                EventKind::AppointmentNoShow,
                AppointmentStatus::NoShow,
                "NoShow",
            ),
        ] {
            let mut e = fixture("siu_s12_booked");
            e.kind = kind;
            e.appointment.as_mut().expect("appointment").status = status;
            let out = render(&e, &opts).expect("renders");
            assert_eq!(out.last().expect("appointment").body["status"], json!(want));
        }
        let mut o = OpsportOptions::default();
        o.statuses.remove("entered_in_error");
        o.statuses.insert("no_show".into(), "no_show".into());
        let keys: Vec<String> = o.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["statuses.entered_in_error", "statuses.no_show"]);
        let mut e = fixture("siu_s12_booked");
        e.kind = EventKind::AppointmentDeleted;
        e.appointment.as_mut().expect("appointment").status = AppointmentStatus::EnteredInError;
        let err = render(&e, &o).expect_err("no status for entered_in_error");
        assert!(err.to_string().contains("entered_in_error"), "{err}");
    }

    #[test]
    fn a_patient_without_a_number_goes_by_national_id_or_mobile_and_name() {
        let opts = OpsportOptions::default();
        let mut e = fixture("siu_s12_booked");
        let p = e.patient.as_mut().expect("patient");
        p.identifiers = vec![crate::model::Identifier {
            value: "1048291048".into(),
            kind: IdentifierKind::NationalId,
            type_code: None,
            assigning_authority: None,
        }];
        p.phones[0].number = "+966 50 2222222".into();
        let nid = "1048291048";
        e.appointment.as_mut().expect("appointment").patient = None;
        let out = render(&e, &opts).expect("renders");
        let patient = &out[out.len() - 2].body;
        assert!(patient.get("patientNo").is_none(), "{patient}");
        assert_eq!(patient["nationalID"], json!(nid));
        assert_eq!(patient["mobile"], json!("+966502222222"));
        let appt = &out[out.len() - 1].body;
        assert_eq!(appt["nationalID"], json!(nid));
        assert!(appt.get("patientNo").is_none(), "{appt}");

        let p = e.patient.as_mut().expect("patient");
        p.identifiers.clear();
        let out = render(&e, &opts).expect("renders");
        let appt = &out[out.len() - 1].body;
        assert_eq!(appt["mobile"], json!("+966502222222"));
        assert!(
            appt["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{appt}"
        );

        e.patient.as_mut().expect("patient").phones.clear();
        assert!(
            render(&e, &opts).is_err(),
            "nothing OpsPort could find it by"
        );
    }

    #[test]
    fn bulk_folds_one_kind_into_the_plural_path() {
        let a = render(&fixture("siu_s12_booked"), &OpsportOptions::default()).expect("renders");
        let b =
            render(&fixture("adt_a04_registered"), &OpsportOptions::default()).expect("renders");
        let patients: Vec<Rendered> = a
            .iter()
            .chain(&b)
            .filter(|r| r.kind == "patient")
            .cloned()
            .collect();
        let folded = bulk(&patients).expect("same kind").expect("not empty");
        assert_eq!(folded.path, "/api/healthcare/patients");
        assert_eq!(folded.body.as_array().map(Vec::len), Some(2));
        assert!(matches!(bulk(&a), Err(MappingError::MixedBulk { .. })));
        assert_eq!(bulk(&[]), Ok(None));
    }

    #[test]
    fn seed_bodies_are_read_back_as_events() {
        let patient = r#"{"name": "Yousef Bin Khalid", "patientNo": "P-10928", "firstName": "Yousef", "secondName": "Bin",
            "lastName": "Khalid", "mobile": "+966502222222", "dateOfBirth": "1994-09-20", "gender": "Male",
            "nationalID": "1048291048", "email": "yousef.khalid@gmail.com", "phone": "+966502222222", "bloodType": "O+", "isActive": true}"#;
        let events = crate::from_json::opsport::events_from_body(
            "patient",
            patient,
            &OpsportOptions::default(),
        )
        .expect("patient");
        let p = events[0].patient.as_ref().expect("patient");
        assert_eq!(p.identifiers.len(), 2);
        assert_eq!(p.phones.len(), 1);
        let appointments = r#"[{"patientNo": "P-10928", "doctorCode": "DOC-SARAH-04", "clinicCode": "CLN-PED-01",
            "date": "2026-06-15T00:00:00", "timeFrom": "10:30:00", "timeTo": "11:00:00", "status": "Cancelled", "notes": "x"}]"#;
        let events = crate::from_json::opsport::events_from_body(
            "appointments",
            appointments,
            &OpsportOptions::default(),
        )
        .expect("appointments");
        assert_eq!(events[0].kind, EventKind::AppointmentCancelled);
        let a = events[0].appointment.as_ref().expect("appointment");
        assert_eq!(
            a.start.as_ref().map(Timestamp::to_iso).as_deref(),
            Some("2026-06-15T10:30:00")
        );
        let bad = r#"[{"patientNo": "P-1", "date": "2026-06-15T00:00:00", "timeFrom": "25:00:00", "status": "Confirmed"}]"#;
        let err = crate::from_json::opsport::events_from_body(
            "appointment",
            bad,
            &OpsportOptions::default(),
        )
        .expect_err("bad time");
        assert_eq!(err.http_status(), 422);
    }
}
