//! Errors of the FHIR side, each naming the element path it concerns, and their
//! OperationOutcome form.

use fhirbolt::model::r4::resources::{OperationOutcome, OperationOutcomeIssue};

/// Why FHIR JSON could not be turned into canonical events (or events into FHIR).
///
/// [`FhirError::http_status`] says how a REST source answers: 400 when the body is not JSON or
/// not a valid FHIR R4 resource, 422 when it is valid FHIR that Switchboard cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// The body is not JSON.
    #[error("invalid JSON at line {line}, column {column}: {reason}")]
    InvalidJson {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the JSON parser expected.
        reason: String,
    },
    /// JSON, but not a valid FHIR R4 resource (unknown element, wrong type, no `resourceType`).
    #[error("{path}: not valid FHIR R4: {reason}")]
    Invalid {
        /// FHIR element path, e.g. `Patient.name[0].given`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Valid FHIR that cannot be used (no identifier, a date that is not a date, unsupported
    /// resource type or bundle type).
    #[error("{path}: {reason}")]
    Unprocessable {
        /// FHIR element path, e.g. `Patient.birthDate`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A canonical value could not be expressed in FHIR (outbound side).
    #[error("cannot render {path}: {reason}")]
    Render {
        /// Canonical field path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl FhirError {
    /// HTTP status for a REST answer: 400 for [`FhirError::InvalidJson`] and
    /// [`FhirError::Invalid`], 422 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidJson { .. } | Self::Invalid { .. } => 400,
            Self::Unprocessable { .. } | Self::Render { .. } => 422,
        }
    }

    /// The element path the error concerns, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::InvalidJson { .. } => None,
            Self::Invalid { path, .. }
            | Self::Unprocessable { path, .. }
            | Self::Render { path, .. } => Some(path),
        }
    }

    /// The error as a FHIR OperationOutcome (one `error` issue with the path in `expression`).
    pub fn operation_outcome(&self) -> OperationOutcome {
        let code = match self {
            Self::InvalidJson { .. } => "structure",
            Self::Invalid { .. } => "structure",
            Self::Unprocessable { .. } => "processing",
            Self::Render { .. } => "exception",
        };
        OperationOutcome {
            issue: vec![OperationOutcomeIssue {
                severity: "error".into(),
                code: code.into(),
                diagnostics: Some(self.to_string().into()),
                expression: self.path().map(|p| p.into()).into_iter().collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The OperationOutcome as FHIR JSON text, ready for a response body.
    pub fn operation_outcome_json(&self) -> String {
        let outcome =
            fhirbolt::model::r4::Resource::OperationOutcome(Box::new(self.operation_outcome()));
        fhirbolt::json::to_string(&outcome, None).unwrap_or_else(|_| {
            // Serialising a two-field OperationOutcome cannot fail; keep a valid body anyway.
            String::from(
                r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}"#,
            )
        })
    }

    pub(crate) fn unprocessable(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unprocessable {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The FHIR element path at a 1-based `(line, column)` position of `json`, rooted at the
/// resource type (`Patient.name[0].given`); array indexes in brackets.
///
/// Used to name the element a fhirbolt (serde) error points at, since its errors carry only a
/// position.
pub(crate) fn path_at(json: &str, line: usize, column: usize, root: &str) -> String {
    enum Frame {
        Object { key: Option<String> },
        Array { index: usize },
    }
    let target = offset_of(json, line, column);
    let mut stack: Vec<Frame> = Vec::new();
    let bytes = json.as_bytes();
    let mut i = 0;
    // true when the next string in an object is a key
    let mut expect_key = false;
    while i < bytes.len() && i < target {
        match bytes[i] {
            b'{' => {
                stack.push(Frame::Object { key: None });
                expect_key = true;
            }
            b'[' => {
                stack.push(Frame::Array { index: 0 });
                expect_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { .. }) => expect_key = true,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' {
                    if bytes[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if expect_key {
                    if let Some(Frame::Object { key }) = stack.last_mut() {
                        *key = Some(json.get(start..j.min(bytes.len())).unwrap_or("").to_owned());
                    }
                    expect_key = false;
                }
                i = j;
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = root.to_owned();
    // The outermost object is the resource itself, so every key becomes `.key`.
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k) } => {
                path.push('.');
                path.push_str(k);
            }
            Frame::Object { key: None } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

fn offset_of(json: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (n, l) in json.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            return offset + column.min(l.len());
        }
        offset += l.len();
    }
    json.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_outcome_parses_back_and_names_the_path() {
        let e = FhirError::unprocessable("Patient.birthDate", "not a date");
        assert_eq!(e.http_status(), 422);
        let json = e.operation_outcome_json();
        let back: fhirbolt::model::r4::Resource =
            fhirbolt::json::from_str(&json, None).expect("valid OperationOutcome");
        let fhirbolt::model::r4::Resource::OperationOutcome(oo) = back else {
            panic!("not an OperationOutcome");
        };
        assert_eq!(oo.issue[0].code.value.as_deref(), Some("processing"));
        assert_eq!(
            oo.issue[0].expression[0].value.as_deref(),
            Some("Patient.birthDate")
        );
    }

    #[test]
    fn path_at_names_nested_elements() {
        let json = "{\"resourceType\":\"Patient\",\n\"name\":[{\"family\":\"A\"},{\"given\":[1]}]}";
        // column of the `1` on line 2
        let col = json
            .lines()
            .nth(1)
            .map(|l| l.find('1').unwrap_or(0) + 1)
            .unwrap_or(0);
        assert_eq!(path_at(json, 2, col, "Patient"), "Patient.name[1].given[0]");
    }
}
