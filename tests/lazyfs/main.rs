//! `lazyfs`: a FUSE filesystem for the power-cut tests that loses what was not fsynced, as a
//! disk's volatile cache does on power failure (the idea of LazyFS, used by Jepsen).
//!
//! ```text
//! lazyfs BACKING_DIR MOUNTPOINT
//! ```
//!
//! A passthrough over `BACKING_DIR`. File data written through the mount is kept in memory
//! (reads see it, laid over the backing file) until the application calls `fsync` or
//! `fdatasync` on that file: only then is it written to the backing file, which is then
//! fsynced too. Size changes (`ftruncate`, `O_TRUNC`) wait in memory the same way.
//! `fsyncdir` fsyncs the backing folder. What does *not* sync: `close`, `sync_file_range`
//! (the kernel never sends it to a FUSE daemon; sled 0.34's flush ends in it, which is
//! why this exists), `msync`, process exit.
//!
//! Simplification: metadata operations (create, mkdir, rename, unlink, chmod, symlink) go
//! straight to the backing folder and survive a cut as if the filesystem journalled them
//! at once; a real filesystem may lose a create or rename not followed by fsync of the
//! folder. Hard links, `fallocate` and extended attributes are not supported.
//!
//! Control, one command a line on standard input, one answer a line on standard output:
//! - `ready` is printed once the filesystem is mounted;
//! - `cut`: the power cut. Every unsynced write and size change is thrown away; answers
//!   `cut files=N bytes=M`. Kill the writers first, and remount (end this process, start a
//!   new one) before reading again, so that nothing the kernel still holds can hide the loss;
//! - `stats`: answers `stats fsyncs=N fsyncdirs=N writes=N cuts=N pending_files=N pending_bytes=N`;
//! - end of input: unmount (lazily if the mount is busy) and exit. What was not synced is
//!   lost, as in a power cut.
//!
//! Every file is opened in direct-IO mode and no attribute or entry is cached by the kernel.
//! Mounting needs root (a direct mount(2)) or `fusermount3` from Debian's `fuse3` package.

mod fs;
mod overlay;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: lazyfs BACKING_DIR MOUNTPOINT");
        return ExitCode::from(2);
    };
    let backing = match backing.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lazyfs: backing folder {}: {e}", backing.display());
            return ExitCode::FAILURE;
        }
    };
    let fs = fs::LazyFs::new(backing);
    let control = fs.clone();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("lazyfs".into()),
        fuser::MountOption::Subtype("lazyfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
    ];
    // Two threads, so a slow fsync of the backing file does not stall every read.
    config.n_threads = Some(2);
    let session = match fuser::spawn_mount(fs, mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "lazyfs: cannot mount on {} ({e}); needs root or fusermount3 (apt-get install fuse3)",
                mountpoint.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        // The test reads every answer; if it is gone, so is the reason to go on.
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    };
    if !say("ready".into()) {
        return ExitCode::FAILURE;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.trim() {
            "" => continue,
            "cut" => {
                let cut = control.cut();
                format!("cut files={} bytes={}", cut.files, cut.bytes)
            }
            "stats" => {
                let (s, pending) = control.stats();
                format!(
                    "stats fsyncs={} fsyncdirs={} writes={} cuts={} pending_files={} pending_bytes={}",
                    s.fsyncs, s.fsyncdirs, s.writes, s.cuts, pending.files, pending.bytes
                )
            }
            other => format!("error unknown command {other:?}"),
        };
        if !say(answer) {
            break;
        }
    }
    match session.umount_and_join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Busy: a process still has files open (its test died before killing it).
            // Detach the mount so that nothing is left behind; once this process exits,
            // those files answer ENOTCONN.
            let detached = std::process::Command::new("umount")
                .arg("-l")
                .arg(mountpoint)
                .status()
                .is_ok_and(|s| s.success());
            eprintln!(
                "lazyfs: unmount of {}: {e}; lazy unmount {}",
                mountpoint.display(),
                if detached { "done" } else { "failed too" }
            );
            ExitCode::FAILURE
        }
    }
}
