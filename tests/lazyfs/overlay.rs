//! What one file looks like to the application while some of its writes are not synced yet.
//!
//! An [`Overlay`] is the volatile cache of one file: the 4 KiB pages written since the last
//! fsync, the size the application sees, and how much of the backing file still counts
//! (a truncation hides what lies past it, even if the file grows again). Reads see the pages
//! over the backing file; [`Overlay::apply`] writes them through on fsync; dropping an
//! overlay is the power cut. It does no IO of its own beyond the reads and writes of the
//! backing file it is handed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Granularity of the cache, as a disk's: a write dirties whole pages.
pub const PAGE: u64 = 4096;

/// The unsynced state of one file.
#[derive(Debug)]
pub struct Overlay {
    /// The size the application sees.
    size: u64,
    /// Bytes of the backing file that are still part of the content: never more than
    /// `size`; past it the content is zeros or pages.
    kept: u64,
    /// Dirty pages by index, each `PAGE` bytes (bytes past `size` are zero).
    pages: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    /// A clean overlay over a backing file of `backing_len` bytes.
    pub fn new(backing_len: u64) -> Overlay {
        Overlay {
            size: backing_len,
            kept: backing_len,
            pages: BTreeMap::new(),
        }
    }

    /// The size the application sees.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in memory only.
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// Reads `len` bytes at `offset` as the application sees them (short at the end).
    ///
    /// # Errors
    ///
    /// A read error of the backing file.
    pub fn read(&self, base: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0; (end - offset) as usize];
        if offset < self.kept {
            let upto = (self.kept.min(end) - offset) as usize;
            read_base(base, offset, &mut out[..upto])?;
        }
        for (&idx, page) in self.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let start = idx * PAGE;
            let from = start.max(offset);
            let to = (start + PAGE).min(end);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - start) as usize..(to - start) as usize]);
        }
        Ok(out)
    }

    /// Writes `data` at `offset` into the cache; the file grows to cover it.
    ///
    /// # Errors
    ///
    /// A read error of the backing file while filling a page for the first time.
    pub fn write(&mut self, base: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        for idx in offset / PAGE..=(end - 1) / PAGE {
            let start = idx * PAGE;
            if !self.pages.contains_key(&idx) {
                let mut page = vec![0; PAGE as usize];
                if start < self.kept {
                    let upto = ((self.kept - start).min(PAGE)) as usize;
                    read_base(base, start, &mut page[..upto])?;
                }
                self.pages.insert(idx, page);
            }
            let page = self
                .pages
                .get_mut(&idx)
                .expect("the page was just inserted");
            let from = start.max(offset);
            let to = (start + PAGE).min(end);
            page[(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Sets the size (ftruncate): what lies past it is gone, growing again reads zeros.
    pub fn truncate(&mut self, size: u64) {
        self.pages.retain(|&idx, _| idx * PAGE < size);
        if let Some(page) = self.pages.get_mut(&(size / PAGE)) {
            page[(size % PAGE) as usize..].fill(0);
        }
        self.kept = self.kept.min(size);
        self.size = size;
    }

    /// Writes the cached state through to `file` (the backing file, opened for writing);
    /// the caller syncs it.
    ///
    /// # Errors
    ///
    /// An IO error of the backing file.
    pub fn apply(self, file: &File) -> io::Result<()> {
        if file.metadata()?.len() > self.kept {
            file.set_len(self.kept)?;
        }
        file.set_len(self.size)?;
        for (idx, page) in &self.pages {
            let start = idx * PAGE;
            let n = (self.size - start).min(PAGE) as usize;
            file.write_all_at(&page[..n], start)?;
        }
        Ok(())
    }
}

/// Fills `buf` from `base` at `offset`; what lies past the end of `base` stays as it is.
fn read_base(base: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match base.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn backing(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(content).expect("write");
        f
    }

    fn content(f: &File) -> Vec<u8> {
        let len = f.metadata().expect("metadata").len();
        let mut buf = vec![0; len as usize];
        f.read_exact_at(&mut buf, 0).expect("read");
        buf
    }

    /// A simple model: the file as a vector, changed the same way.
    fn model_write(model: &mut Vec<u8>, offset: usize, data: &[u8]) {
        if model.len() < offset + data.len() {
            model.resize(offset + data.len(), 0);
        }
        model[offset..offset + data.len()].copy_from_slice(data);
    }

    #[test]
    fn reads_see_unsynced_writes_over_the_backing_file_which_stays_unchanged() {
        let base = backing(&[1; 10_000]);
        let mut o = Overlay::new(10_000);
        o.write(&base, 4090, &[2; 20]).expect("write");
        o.write(&base, 12_000, &[3; 5]).expect("write past the end");
        assert_eq!(o.size(), 12_005);
        let got = o.read(&base, 0, 20_000).expect("read");
        let mut want = vec![1; 10_000];
        model_write(&mut want, 4090, &[2; 20]);
        model_write(&mut want, 12_000, &[3; 5]);
        assert_eq!(got, want);
        assert_eq!(content(&base), vec![1; 10_000], "nothing written through");
        assert_eq!(o.dirty_bytes(), 3 * PAGE);
    }

    #[test]
    fn a_truncation_hides_the_old_bytes_even_when_the_file_grows_again() {
        let base = backing(&[7; 9000]);
        let mut o = Overlay::new(9000);
        o.write(&base, 100, &[8; 10]).expect("write");
        o.truncate(105);
        o.truncate(9000);
        let got = o.read(&base, 0, 9000).expect("read");
        let mut want = vec![7; 100];
        want.extend([8; 5]);
        want.resize(9000, 0);
        assert_eq!(got, want);
    }

    #[test]
    fn apply_writes_exactly_what_reads_showed() {
        let base = backing(&[5; 20_000]);
        let mut o = Overlay::new(20_000);
        let mut model = vec![5; 20_000];
        // Writes, truncations and extensions at awkward offsets.
        for (i, &(offset, len)) in [(0, 1), (4095, 2), (8000, 9000), (30_000, 3), (123, 4096)]
            .iter()
            .enumerate()
        {
            let data = vec![i as u8 + 10; len];
            o.write(&base, offset as u64, &data).expect("write");
            model_write(&mut model, offset, &data);
        }
        o.truncate(15_000);
        model.truncate(15_000);
        o.write(&base, 16_000, &[9; 10]).expect("write");
        model_write(&mut model, 16_000, &[9; 10]);
        assert_eq!(o.read(&base, 0, 100_000).expect("read"), model);
        o.apply(&base).expect("apply");
        assert_eq!(content(&base), model);
    }
}
