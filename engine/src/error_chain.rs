//! An error and its causes as one line, each cause stated once.
//!
//! The project's error types name their cause in their own text (`cannot listen on
//! 127.0.0.1:2575: Address already in use (os error 98)`) so that a log line, which prints
//! only an error's `Display`, is complete. They also return that cause from
//! [`std::error::Error::source`], which is what chain printers such as anyhow's `{:#}` walk:
//! printing both gave `... (os error 98): ... (os error 98)`. [`join_once`] keeps the walk
//! (a cause that is not in the text yet, such as reqwest's transport error under its
//! "error sending request", is still shown) and drops each cause the text before it already
//! contains. The CLI prints every error through it.

/// Joins an error's texts, outermost first, with `": "`, leaving out each text that the
/// text kept before it already contains.
///
/// ```
/// let line = engine::error_chain::join_once([
///     "cannot start".to_string(),
///     "channel lab: cannot listen on 127.0.0.1:1: Address already in use (os error 98)".into(),
///     "cannot listen on 127.0.0.1:1: Address already in use (os error 98)".into(),
///     "Address already in use (os error 98)".into(),
/// ]);
/// assert_eq!(
///     line,
///     "cannot start: channel lab: cannot listen on 127.0.0.1:1: Address already in use (os error 98)"
/// );
/// ```
pub fn join_once<I: IntoIterator<Item = String>>(texts: I) -> String {
    let mut line = String::new();
    let mut last = String::new();
    for text in texts {
        let text = text.trim().to_string();
        if text.is_empty() || last.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        last = text;
    }
    line
}

/// [`join_once`] over `err` and every [`std::error::Error::source`] below it.
pub fn text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        texts.push(e.to_string());
        next = e.source();
    }
    join_once(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on {addr}: {source}")]
    struct Bind {
        addr: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach the peer")]
    struct Outer {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_text_is_not_repeated() {
        let e = Bind {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from_raw_os_error(98),
        };
        let line = text(&e);
        assert_eq!(line.matches("os error 98").count(), 1, "{line}");
        assert!(line.starts_with("cannot listen on 127.0.0.1:1: "), "{line}");
    }

    #[test]
    fn a_cause_not_in_the_text_is_kept() {
        let e = Outer {
            source: std::io::Error::from_raw_os_error(111),
        };
        let line = text(&e);
        assert!(line.starts_with("cannot reach the peer: "), "{line}");
        assert_eq!(line.matches("os error 111").count(), 1, "{line}");
    }

    #[test]
    fn empty_texts_are_skipped() {
        assert_eq!(
            join_once(["a".to_string(), String::new(), "b".into()]),
            "a: b"
        );
    }
}
