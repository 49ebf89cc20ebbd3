//! The file destination: each delivery becomes one file in a local folder, written under a
//! temporary name and renamed, so a reader never sees half a file. A file is reported
//! delivered only once its data and its name are synced to disk; deliveries that wait are
//! written in batches whose syncs run together, which is what lets the folder keep up with
//! intake (one sync at a time costs a disk round trip per file).

use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use bytes::Bytes;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Configuration of a file destination (`type = "file"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// Folder the files are written to (created when missing).
    pub folder: PathBuf,
    /// File name extension, without the dot (`hl7`, `json`).
    #[serde(default = "default_extension")]
    pub extension: String,
    /// Files written together with one round of syncs when deliveries wait (1 writes and
    /// syncs each file alone).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_extension() -> String {
    "hl7".into()
}

fn default_batch_size() -> usize {
    256
}

impl FileConfig {
    /// Problems the loader cannot see.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.extension.is_empty() || !self.extension.chars().all(|c| c.is_ascii_alphanumeric()) {
            out.push((
                "extension".into(),
                format!("'{}' is not a plain extension", self.extension),
            ));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            out.push((
                "batch_size".into(),
                format!("{} is not between 1 and 4096", self.batch_size),
            ));
        }
        out
    }
}

/// The file writer.
#[derive(Debug)]
pub struct FileWriter {
    config: FileConfig,
}

impl FileWriter {
    /// Creates the folder when missing.
    ///
    /// # Errors
    ///
    /// A sentence when the folder cannot be created.
    pub fn new(config: FileConfig) -> Result<Self, String> {
        std::fs::create_dir_all(&config.folder)
            .map_err(|e| format!("cannot create {}: {e}", config.folder.display()))?;
        Ok(FileWriter { config })
    }

    /// Writes, syncs and removes a probe file in the folder.
    ///
    /// # Errors
    ///
    /// The folder and why it cannot be written.
    pub async fn healthcheck(&self) -> Result<(), String> {
        let folder = self.config.folder.clone();
        tokio::task::spawn_blocking(move || {
            let probe = folder.join(format!(".switchboard-health-{}", std::process::id()));
            let wrote = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
            wrote.map_err(|e| format!("{} is not writable: {e}", folder.display()))
        })
        .await
        .map_err(|_| "file health check task failed".to_string())?
    }

    /// Writes one delivery as `<idempotency key>.<extension>`; a retry overwrites the same file.
    ///
    /// # Errors
    ///
    /// Retryable [`DeliveryError`] when the folder cannot be written.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        self.deliver_batch(std::slice::from_ref(d))
            .await
            .pop()
            .unwrap_or_else(|| Err(DeliveryError::retry("file writer returned no outcome")))
    }

    /// How many deliveries the worker may hand over at once ([`Self::deliver_batch`]).
    pub fn batching(&self) -> Option<(usize, u64)> {
        Some((self.config.batch_size.max(1), 0))
    }

    /// Writes several deliveries, each as its own file, with one round of syncs: every file
    /// is written under its temporary name, the files are synced in parallel (the file
    /// system commits concurrent syncs together), renamed, and the folder is synced once, so
    /// that a file reported delivered survives a power cut under its final name. One outcome
    /// per delivery, in order.
    pub async fn deliver_batch(&self, ds: &[Delivery]) -> Vec<Result<Receipt, DeliveryError>> {
        let files: Vec<(String, Bytes)> = ds
            .iter()
            .map(|d| (self.file_name(&d.idempotency_key), d.body.clone()))
            .collect();
        let folder = self.config.folder.clone();
        let n = files.len();
        let written = tokio::task::spawn_blocking(move || write_synced(&folder, &files)).await;
        let folder = self.config.folder.display();
        match written {
            Err(_) => (0..n)
                .map(|_| Err(DeliveryError::retry("file writer task failed")))
                .collect(),
            Ok(results) => results
                .into_iter()
                .map(|r| match r {
                    Ok(name) => Ok(Receipt {
                        status: None,
                        detail: name,
                        answer: None,
                    }),
                    Err(e) => Err(DeliveryError::retry(format!(
                        "cannot write into {folder}: {e}"
                    ))),
                })
                .collect(),
        }
    }

    /// `<idempotency key>.<extension>`, the key reduced to characters safe in a file name.
    fn file_name(&self, key: &str) -> String {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}.{}", self.config.extension)
    }
}

/// Threads that sync the files of one batch at once.
const SYNC_THREADS: usize = 16;

/// Writes `files` (name, body) into `folder` durably: temporary files written, synced in
/// parallel, renamed in order, then the folder synced. The first file whose write, sync or
/// rename fails gets that error and every later one is not renamed; a failed folder sync
/// fails every file of the batch (none is known to be durable).
fn write_synced(folder: &Path, files: &[(String, Bytes)]) -> Vec<std::io::Result<String>> {
    use std::io::Write;
    let tmp_of = |name: &str| folder.join(format!(".{name}.tmp"));
    let opened: Vec<std::io::Result<std::fs::File>> = files
        .iter()
        .map(|(name, body)| {
            let mut f = std::fs::File::create(tmp_of(name))?;
            f.write_all(body)?;
            Ok(f)
        })
        .collect();
    let synced = sync_all_parallel(opened);
    // Renamed in order, and none after the first failure: a file never appears before one
    // that came earlier in the batch (they may be one patient's, in order).
    let mut failed = false;
    let mut out: Vec<std::io::Result<String>> = synced
        .into_iter()
        .zip(files)
        .map(|(r, (name, _))| {
            if failed {
                let _ = std::fs::remove_file(tmp_of(name));
                return Err(std::io::Error::other(
                    "not written: an earlier file of the same batch failed",
                ));
            }
            let r = r
                .and_then(|()| std::fs::rename(tmp_of(name), folder.join(name)))
                .map(|()| name.clone());
            if r.is_err() {
                failed = true;
                let _ = std::fs::remove_file(tmp_of(name));
            }
            r
        })
        .collect();
    if out.iter().any(Result::is_ok) {
        if let Err(e) = std::fs::File::open(folder).and_then(|d| d.sync_all()) {
            let kind = e.kind();
            let text = format!("cannot sync the folder: {e}");
            for r in &mut out {
                if r.is_ok() {
                    *r = Err(std::io::Error::new(kind, text.clone()));
                }
            }
        }
    }
    out
}

/// `sync_data` of every open file, on up to [`SYNC_THREADS`] threads; errors stay in place.
fn sync_all_parallel(files: Vec<std::io::Result<std::fs::File>>) -> Vec<std::io::Result<()>> {
    let sync = |r: &std::io::Result<std::fs::File>| -> std::io::Result<()> {
        match r {
            Ok(f) => f.sync_data(),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    };
    if files.len() <= 1 {
        return files.iter().map(sync).collect();
    }
    let chunk = files.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(sync).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    (0..chunk)
                        .map(|_| Err(std::io::Error::other("a sync thread panicked")))
                        .collect()
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(folder: &Path, batch_size: usize) -> FileWriter {
        FileWriter::new(FileConfig {
            name: "archive".into(),
            folder: folder.to_path_buf(),
            extension: "hl7".into(),
            batch_size,
            delivery: DeliveryConfig::default(),
        })
        .expect("folder")
    }

    fn delivery(key: &str, body: &str) -> Delivery {
        Delivery {
            body: Bytes::from(body.to_string()),
            content_type: "application/hl7-v2".into(),
            idempotency_key: key.into(),
            control_id: None,
            path: None,
        }
    }

    fn names(folder: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(folder)
            .expect("read folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_batch_writes_every_file_under_its_final_name_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = writer(dir.path(), 256);
        assert_eq!(w.batching(), Some((256, 0)));
        let ds: Vec<Delivery> = (0..40)
            .map(|i| delivery(&format!("m{i:02}:archive"), &format!("MSH|{i}")))
            .collect();
        let results = w.deliver_batch(&ds).await;
        assert_eq!(results.len(), 40);
        for (i, r) in results.iter().enumerate() {
            let receipt = r.as_ref().expect("delivered");
            assert_eq!(receipt.detail, format!("m{i:02}_archive.hl7"));
            let body = std::fs::read_to_string(dir.path().join(&receipt.detail)).expect("file");
            assert_eq!(body, format!("MSH|{i}"));
        }
        let all = names(dir.path());
        assert_eq!(all.len(), 40, "{all:?}");
        assert!(all.iter().all(|n| !n.starts_with('.')), "{all:?}");
    }

    #[tokio::test]
    async fn a_retry_overwrites_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = writer(dir.path(), 1);
        w.deliver(&delivery("k1", "first")).await.expect("first");
        w.deliver(&delivery("k1", "second")).await.expect("second");
        assert_eq!(names(dir.path()), vec!["k1.hl7".to_string()]);
        let body = std::fs::read_to_string(dir.path().join("k1.hl7")).expect("file");
        assert_eq!(body, "second");
    }

    #[tokio::test]
    async fn a_folder_that_cannot_be_written_fails_every_file_of_the_batch_retryably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("gone");
        let w = writer(&folder, 8);
        std::fs::remove_dir(&folder).expect("remove");
        let results = w
            .deliver_batch(&[delivery("a", "1"), delivery("b", "2")])
            .await;
        assert_eq!(results.len(), 2);
        for r in results {
            let e = r.expect_err("cannot write");
            assert!(e.is_retryable());
            assert!(e.reason.contains("cannot write into"), "{}", e.reason);
        }
    }

    #[tokio::test]
    async fn after_a_failed_file_no_later_file_of_the_batch_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = writer(dir.path(), 8);
        // A folder where the second file must go: its rename fails.
        std::fs::create_dir(dir.path().join("b.hl7")).expect("mkdir");
        std::fs::write(dir.path().join("b.hl7/keep"), b"x").expect("fill");
        let results = w
            .deliver_batch(&[delivery("a", "1"), delivery("b", "2"), delivery("c", "3")])
            .await;
        assert!(results[0].is_ok());
        assert!(results[1].as_ref().expect_err("b fails").is_retryable());
        let later = results[2].as_ref().expect_err("c is not written");
        assert!(later.reason.contains("earlier file"), "{}", later.reason);
        assert_eq!(
            names(dir.path()),
            vec!["a.hl7".to_string(), "b.hl7".to_string()]
        );
    }

    #[test]
    fn batch_size_outside_its_range_is_a_problem() {
        let mut c = FileConfig {
            name: "archive".into(),
            folder: PathBuf::from("out"),
            extension: "hl7".into(),
            batch_size: 0,
            delivery: DeliveryConfig::default(),
        };
        assert_eq!(c.problems()[0].0, "batch_size");
        c.batch_size = 64;
        assert!(c.problems().is_empty());
    }
}
