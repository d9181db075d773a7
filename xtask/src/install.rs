//! `cargo xtask install`: binary, systemd unit, example config and README.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::build::workspace_root;

pub fn install(bin: &Path, prefix: &Path, sysconfdir: Option<&Path>) -> Result<()> {
    let sysconfdir: PathBuf = match sysconfdir {
        Some(d) => d.to_path_buf(),
        None if prefix == Path::new("/usr") || prefix == Path::new("/usr/local") => {
            PathBuf::from("/etc")
        }
        None => prefix.join("etc"),
    };
    let root = workspace_root();
    let sbin = prefix.join("sbin");
    let unit_dir = prefix.join("lib/systemd/system");
    let conf_dir = sysconfdir.join("portsentry");
    let doc_dir = prefix.join("share/doc/portsentry");
    for d in [&sbin, &unit_dir, &conf_dir, &doc_dir] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }

    let target = sbin.join("portsentry");
    copy(bin, &target)?;

    let template = fs::read_to_string(root.join("dist/portsentry.service"))
        .context("reading dist/portsentry.service")?;
    let unit = render_unit(&template, &sbin, &sysconfdir, &doc_dir);
    let unit_path = unit_dir.join("portsentry.service");
    fs::write(&unit_path, unit).with_context(|| format!("writing {}", unit_path.display()))?;
    println!("installed {}", unit_path.display());

    let conf = conf_dir.join("portsentry.toml");
    if conf.exists() {
        let example = conf_dir.join("portsentry.toml.example");
        copy(&root.join("dist/portsentry.toml"), &example)?;
        println!(
            "kept your {} (the new example is {})",
            conf.display(),
            example.display()
        );
    } else {
        copy(&root.join("dist/portsentry.toml"), &conf)?;
    }
    copy(&root.join("README.md"), &doc_dir.join("README.md"))?;
    println!("next: systemctl daemon-reload && systemctl enable --now portsentry");
    Ok(())
}

/// dist/portsentry.service with the install's directories in place of @SBINDIR@, @SYSCONFDIR@
/// and the documentation path.
pub fn render_unit(template: &str, sbin: &Path, sysconfdir: &Path, doc_dir: &Path) -> String {
    template
        .replace("@SBINDIR@", &sbin.display().to_string())
        .replace("@SYSCONFDIR@", &sysconfdir.display().to_string())
        .replace(
            "/usr/local/share/doc/portsentry",
            &doc_dir.display().to_string(),
        )
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    println!("installed {}", to.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// The unit as `cargo xtask install` writes it, with its ExecStart pointing at the binary
    /// `cargo xtask test` built, passes `systemd-analyze verify` without a single complaint
    /// (unknown keys and bad values are only warnings there, so stderr must be empty too).
    #[test]
    fn the_installed_unit_passes_systemd_analyze_verify() {
        if Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipping: systemd-analyze is not installed (Debian: systemd)");
            return;
        }
        let bin = PathBuf::from(
            std::env::var_os("PORTSENTRY_BIN")
                .expect("PORTSENTRY_BIN is not set: run the tests with `cargo xtask test`"),
        );
        let sbin = bin.parent().expect("the binary's directory");
        assert_eq!(bin.file_name().and_then(|n| n.to_str()), Some("portsentry"));
        let dir = std::env::temp_dir().join(format!("portsentry-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let template =
            fs::read_to_string(workspace_root().join("dist/portsentry.service")).unwrap();
        let unit = render_unit(&template, sbin, Path::new("/etc"), &dir);
        assert!(!unit.contains('@'), "a placeholder is left: {unit}");
        assert!(
            unit.contains(&format!("ExecStart={}/portsentry run ", sbin.display())),
            "{unit}"
        );
        let path = dir.join("portsentry.service");
        fs::write(&path, &unit).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let _ = fs::remove_dir_all(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}: {}\n{stderr}",
            path.display(),
            out.status
        );
    }

    /// Under ProtectSystem=strict the unit can write only its StateDirectory and LogsDirectory
    /// (and ReadWritePaths): every history file and state_dir the docs suggest must be in them,
    /// or the history is silently lost under systemd.
    #[test]
    fn documented_paths_are_writable_under_the_unit() {
        let root = workspace_root();
        let unit = fs::read_to_string(root.join("dist/portsentry.service")).unwrap();
        let setting = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("the unit has no {key}"))
                .to_owned()
        };
        let logs = format!("/var/log/{}/", setting("LogsDirectory="));
        let state = format!("/var/lib/{}", setting("StateDirectory="));
        let mut docs = vec![root.join("README.md"), root.join("dist/portsentry.toml")];
        for entry in fs::read_dir(root.join("docs")).unwrap() {
            docs.push(entry.unwrap().path());
        }
        let mut seen = 0;
        for doc in docs {
            let text = fs::read_to_string(&doc).unwrap();
            for (n, line) in text.lines().enumerate() {
                let quoted = |key: &str| {
                    let rest = line.split(key).nth(1)?;
                    rest.split('"').next().map(str::to_owned)
                };
                let place = format!("{}:{}", doc.display(), n + 1);
                for path in [quoted("history_file = \""), quoted("logpath  = ")]
                    .into_iter()
                    .flatten()
                    .filter(|p| !p.is_empty())
                {
                    seen += 1;
                    assert!(path.starts_with(&logs), "{place}: {path} is not in {logs}");
                }
                if let Some(path) = quoted("state_dir = \"").filter(|p| p.starts_with("/var/")) {
                    seen += 1;
                    assert_eq!(path, state, "{place}");
                }
            }
        }
        assert!(seen >= 3, "found only {seen} documented paths");
    }
}
