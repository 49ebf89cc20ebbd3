//! Splitting files into messages: one message, several messages, or an FHS/BHS batch.
//!
//! Segment endings may be CR, LF or CRLF; messages may be separated by blank lines. Each
//! message comes out with CR segment terminators. In a batch, BTS-1 and FTS-1 counts are
//! checked when present.

/// Why a file could not be split into messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A segment appears before the first MSH (other than the batch envelope).
    #[error("line {line}: segment before the first MSH")]
    SegmentOutsideMessage {
        /// 1-based line number.
        line: usize,
    },
    /// BTS-1 does not match the number of messages in the batch.
    #[error("batch {batch}: BTS-1 says {declared} messages, found {found}")]
    BatchCount {
        /// 1-based batch number in the file.
        batch: usize,
        /// BTS-1.
        declared: usize,
        /// Messages found.
        found: usize,
    },
    /// FTS-1 does not match the number of batches in the file.
    #[error("FTS-1 says {declared} batches, found {found}")]
    FileCount {
        /// FTS-1.
        declared: usize,
        /// Batches found.
        found: usize,
    },
}

/// The messages of a file, and the batch envelope segments when there was one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// FHS and BHS segments as they were received.
    pub envelope: Vec<String>,
    /// Each message, segments joined with CR and ending with CR.
    pub messages: Vec<String>,
}

/// Splits text into messages.
///
/// # Errors
///
/// [`BatchError`] when a segment stands outside any message or a batch count is wrong.
///
/// ```
/// use transforms::hl7v2::batch::split;
/// let b = split("MSH|^~\\&|A\nPID|1\n\nMSH|^~\\&|B\r\nPID|2\r\n").unwrap();
/// assert_eq!(b.messages, vec!["MSH|^~\\&|A\rPID|1\r", "MSH|^~\\&|B\rPID|2\r"]);
/// ```
pub fn split(text: &str) -> Result<Batch, BatchError> {
    let mut batch = Batch::default();
    let mut current: Option<String> = None;
    let mut batches = 0usize;
    let mut in_batch = 0usize;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    for (index, line) in text.split(['\r', '\n']).enumerate() {
        let line = line.trim_end_matches([' ', '\t']);
        if line.trim().is_empty() {
            continue;
        }
        let id = line.get(..3).unwrap_or(line);
        let field_sep = line.chars().nth(3).unwrap_or('|');
        match id {
            "FHS" | "BHS" => {
                if let Some(m) = current.take() {
                    batch.messages.push(m);
                }
                if id == "BHS" {
                    batches += 1;
                    in_batch = 0;
                }
                batch.envelope.push(line.to_string());
            }
            "BTS" => {
                if let Some(m) = current.take() {
                    batch.messages.push(m);
                    in_batch += 1;
                }
                if let Some(declared) = count_field(line, field_sep) {
                    if declared != in_batch {
                        return Err(BatchError::BatchCount {
                            batch: batches.max(1),
                            declared,
                            found: in_batch,
                        });
                    }
                }
            }
            "FTS" => {
                if let Some(m) = current.take() {
                    batch.messages.push(m);
                }
                if let Some(declared) = count_field(line, field_sep) {
                    if declared != batches {
                        return Err(BatchError::FileCount {
                            declared,
                            found: batches,
                        });
                    }
                }
            }
            "MSH" => {
                if let Some(m) = current.take() {
                    batch.messages.push(m);
                    in_batch += 1;
                }
                let mut m = String::with_capacity(512);
                m.push_str(line);
                m.push('\r');
                current = Some(m);
            }
            _ => match current.as_mut() {
                Some(m) => {
                    m.push_str(line);
                    m.push('\r');
                }
                None => {
                    return Err(BatchError::SegmentOutsideMessage { line: index + 1 });
                }
            },
        }
    }
    if let Some(m) = current.take() {
        batch.messages.push(m);
    }
    Ok(batch)
}

fn count_field(line: &str, sep: char) -> Option<usize> {
    line.split(sep).nth(1)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_with_counts() {
        let text =
            "FHS|^~\\&|HIS\rBHS|^~\\&|HIS\rMSH|^~\\&|A|1\rPID|1\rMSH|^~\\&|A|2\rBTS|2\rFTS|1\r";
        let b = split(text).expect("valid batch");
        assert_eq!(b.messages.len(), 2);
        assert_eq!(b.envelope.len(), 2);
        assert_eq!(b.messages[1], "MSH|^~\\&|A|2\r");
    }

    #[test]
    fn wrong_counts_are_errors() {
        let text = "BHS|^~\\&|HIS\rMSH|^~\\&|A|1\rBTS|3\r";
        assert_eq!(
            split(text),
            Err(BatchError::BatchCount {
                batch: 1,
                declared: 3,
                found: 1
            })
        );
        let text = "FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rBTS|1\rFTS|2\r";
        assert_eq!(
            split(text),
            Err(BatchError::FileCount {
                declared: 2,
                found: 1
            })
        );
    }

    #[test]
    fn stray_segment_is_an_error() {
        assert_eq!(
            split("PID|1\rMSH|^~\\&|A\r"),
            Err(BatchError::SegmentOutsideMessage { line: 1 })
        );
    }

    #[test]
    fn crlf_and_blank_lines() {
        let b = split("\r\nMSH|^~\\&|A\r\nPID|1\r\n\r\n\r\nMSH|^~\\&|B\r\n").expect("valid");
        assert_eq!(b.messages.len(), 2);
        assert!(b.envelope.is_empty());
    }
}
