//! Packaging: the systemd unit, the `cargo deb` metadata and the Dockerfile agree with the
//! repository and the real binary (none of them is built here: no Docker, no cargo-deb).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the repository")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The unit's `[section]` -> key -> every value given (a key may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        out.entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

/// The last value of `key` (the one systemd keeps for a single-valued key).
fn last<'a>(section: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    section
        .get(key)
        .and_then(|values| values.last())
        .unwrap_or_else(|| panic!("[Service] has no {key}"))
}

fn help(args: &[&str]) -> String {
    let out = Command::new(crate::support::binary())
        .args(args)
        .arg("--help")
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_unit_is_hardened_and_runs_a_command_the_binary_has() {
    let text = read("packaging/switchboard.service");
    let unit = parse_unit(&text);
    let service = &unit["Service"];
    let one = |key: &str| last(service, key);
    for (key, want) in [
        ("User", "switchboard"),
        ("Group", "switchboard"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(key), want, "[Service] {key}");
    }
    // The data folder is the one writable path, and the engine is told to use it.
    let data = one("ReadWritePaths");
    assert_eq!(data, "/var/lib/switchboard");
    assert!(
        service["Environment"].contains(&format!("SWITCHBOARD_DATA_DIR={data}")),
        "{:?}",
        service["Environment"]
    );
    assert_eq!(one("WorkingDirectory"), data);

    // ExecStart: the installed binary, a subcommand and flags the real binary has.
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(
        exec,
        [
            "/usr/bin/switchboard",
            "run",
            "--config",
            "/etc/switchboard"
        ]
    );
    let top = help(&[]);
    assert!(
        top.lines().any(|l| l.trim_start().starts_with("run ")),
        "{top}"
    );
    let run = help(&["run"]);
    assert!(run.contains("--config <CONFIG>"), "{run}");
    // What `run --config` reads must be what the .deb installs there.
    let deb = deb_metadata();
    let conf_files: Vec<&str> = deb["conf-files"]
        .as_array()
        .expect("conf-files")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(conf_files.contains(&"/etc/switchboard/switchboard.toml"));
    assert!(conf_files
        .iter()
        .any(|f| f.starts_with("/etc/switchboard/channels/")));

    // systemd's own reading of the unit, when systemd-analyze is installed: the binary path
    // is replaced by the binary under test, and any remark on the file fails.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: the unit was checked by parsing only");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("switchboard.service");
    let binary = crate::support::binary();
    std::fs::write(
        &copy,
        text.replace("/usr/bin/switchboard", &binary.display().to_string()),
    )
    .expect("write the unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let remarks = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{remarks}");
    assert!(
        !remarks.contains("switchboard.service"),
        "systemd-analyze verify has remarks on the unit:\n{remarks}"
    );
}

fn deb_metadata() -> toml::Value {
    let manifest: toml::Value = read("engine/Cargo.toml")
        .parse()
        .expect("engine/Cargo.toml");
    manifest["package"]["metadata"]["deb"].clone()
}

/// True when `name` matches `pattern`, where `*` stands for any run of characters.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

#[test]
fn every_deb_asset_and_script_exists_in_the_repository() {
    let deb = deb_metadata();
    let engine = repo().join("engine");
    let manifest: toml::Value = read("engine/Cargo.toml")
        .parse()
        .expect("engine/Cargo.toml");
    let bins: Vec<&str> = manifest["bin"]
        .as_array()
        .expect("[[bin]]")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    let mut installed = Vec::new();
    for asset in deb["assets"].as_array().expect("assets") {
        let parts: Vec<&str> = asset
            .as_array()
            .expect("[source, dest, mode]")
            .iter()
            .map(|v| v.as_str().expect("a string"))
            .collect();
        let &[source, dest, mode] = parts.as_slice() else {
            panic!("asset {asset:?} is not [source, dest, mode]");
        };
        assert!(
            u32::from_str_radix(mode, 8).is_ok(),
            "{source}: mode {mode}"
        );
        assert!(dest.ends_with('/'), "{source}: {dest} is a folder");
        if let Some(bin) = source.strip_prefix("target/release/") {
            assert!(bins.contains(&bin), "{source} is not a [[bin]] of engine");
            installed.push(format!("/{dest}{bin}"));
            continue;
        }
        let path = engine.join(source);
        let name = path.file_name().expect("a file name").to_string_lossy();
        if name.contains('*') {
            let folder = path.parent().expect("a folder");
            let found: Vec<String> = std::fs::read_dir(folder)
                .unwrap_or_else(|e| panic!("{source}: {e}"))
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|f| matches(&name, f))
                .collect();
            assert!(!found.is_empty(), "{source} matches no file");
            installed.extend(found.iter().map(|f| format!("/{dest}{f}")));
        } else {
            assert!(path.is_file(), "{source} ({}) is missing", path.display());
            installed.push(format!("/{dest}{name}"));
        }
    }
    for conf in deb["conf-files"].as_array().expect("conf-files") {
        let conf = conf.as_str().expect("a path");
        assert!(
            installed.iter().any(|i| i == conf),
            "conf-file {conf} is not installed by an asset: {installed:?}"
        );
    }
    assert!(installed.contains(&"/usr/bin/switchboard".to_owned()));
    assert!(installed.contains(&"/usr/lib/systemd/system/switchboard.service".to_owned()));

    let scripts = engine.join(
        deb["maintainer-scripts"]
            .as_str()
            .expect("maintainer-scripts"),
    );
    let postinst = std::fs::read_to_string(scripts.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("adduser --system"),
        "postinst creates the user"
    );
    assert!(
        postinst.contains("/var/lib/switchboard"),
        "postinst creates the data folder"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = scripts.join(script);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect(script).permissions().mode();
            assert!(mode & 0o111 != 0, "{script} is executable");
        }
        let status = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .expect("sh -n");
        assert!(status.success(), "{script} is valid sh");
    }
}

#[test]
fn the_container_publishes_the_shipped_ports_and_rewrites_real_lines() {
    let dockerfile = read("packaging/Dockerfile");
    let engine: toml::Value = read("conf/switchboard.toml")
        .parse()
        .expect("switchboard.toml");
    let channel: toml::Value = read("conf/channels/his-adt.toml")
        .parse()
        .expect("his-adt.toml");
    let admin = engine["admin"]["listen"].as_str().expect("admin.listen");
    let mllp = channel["source"]["listen"].as_str().expect("source.listen");
    let port = |addr: &str| addr.rsplit_once(':').expect("host:port").1.to_owned();
    let expose: Vec<String> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(str::to_owned))
        .collect();
    assert_eq!(expose, [port(mllp), port(admin)]);
    // The build stage rewrites these lines to listen on every interface; they must exist
    // as written (the build also fails if they do not).
    for (file, addr) in [
        ("conf/channels/his-adt.toml", mllp),
        ("conf/switchboard.toml", admin),
    ] {
        let line = format!("listen = \"{addr}\"");
        assert!(read(file).lines().any(|l| l == line), "{file}: {line}");
        assert!(
            dockerfile.contains(&format!("s/^{line}/")),
            "the Dockerfile rewrites {line}"
        );
    }
    // The health check asks the admin server's /health on its port.
    let health = dockerfile
        .lines()
        .find(|l| l.contains("CMD [\"bash\""))
        .expect("HEALTHCHECK command");
    assert!(
        health.contains(&format!("/dev/tcp/127.0.0.1/{}", port(admin))),
        "{health}"
    );
    assert!(health.contains("GET /health "), "{health}");
    assert!(dockerfile.contains("\nUSER switchboard\n"));
    assert!(dockerfile.contains("CMD [\"run\", \"--config\", \"/etc/switchboard\"]"));
}
