//! `cargo xtask install`: binary, systemd unit, example config, README, man pages and shell
//! completions. `cargo xtask man` only generates the last two (the binary's hidden
//! `generate-docs` verb writes them from its clap definitions).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
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
    // Logcheck's rules: scans and blocks as security alerts, an allowlisted host's or a
    // refused (spoofed, contested, bogus, peer) probe as a security event, routine lines
    // ignored. Logcheck reads every file in these directories; ours is named after the daemon.
    for rules in ["cracking.d", "violations.d", "ignore.d.server"] {
        let dir = sysconfdir.join("logcheck").join(rules);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        copy(
            &root.join("dist/logcheck").join(rules).join("portsentry"),
            &dir.join("portsentry"),
        )?;
    }
    let generated = generate_docs(bin, &crate::build::target_dir().join("docs"))?;
    install_docs(&generated, prefix)?;
    println!("next: systemctl daemon-reload && systemctl enable --now portsentry");
    Ok(())
}

/// Runs `BIN generate-docs OUT`: OUT/man8/*.8 and OUT/completions/. Returns OUT.
pub fn generate_docs(bin: &Path, out: &Path) -> Result<PathBuf> {
    let _ = fs::remove_dir_all(out);
    let run = Command::new(bin)
        .arg("generate-docs")
        .arg(out)
        .output()
        .with_context(|| format!("running {} generate-docs", bin.display()))?;
    if !run.status.success() {
        anyhow::bail!(
            "{} generate-docs {}: {}: {}",
            bin.display(),
            out.display(),
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
    }
    Ok(out.to_owned())
}

/// Where each generated file goes under PREFIX: man pages in share/man/man8, completions in the
/// directories bash-completion, zsh and fish read by default.
fn doc_destinations(generated: &Path, prefix: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let share = prefix.join("share");
    let man = generated.join("man8");
    let mut pairs = Vec::new();
    for entry in fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
        let from = entry?.path();
        if let Some(name) = from.file_name() {
            pairs.push((from.clone(), share.join("man/man8").join(name)));
        }
    }
    let completions = generated.join("completions");
    for (file, dest) in [
        ("portsentry.bash", "bash-completion/completions/portsentry"),
        ("_portsentry", "zsh/site-functions/_portsentry"),
        (
            "portsentry.fish",
            "fish/vendor_completions.d/portsentry.fish",
        ),
    ] {
        pairs.push((completions.join(file), share.join(dest)));
    }
    pairs.sort();
    Ok(pairs)
}

/// Copies the generated man pages and completions into PREFIX.
pub fn install_docs(generated: &Path, prefix: &Path) -> Result<()> {
    for (from, to) in doc_destinations(generated, prefix)? {
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        copy(&from, &to)?;
    }
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
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
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
                    // The LogsDirectory, or the StateDirectory where fail2ban's stock jail
                    // reads PortSentry's history (/var/lib/portsentry/portsentry.history).
                    assert!(
                        path.starts_with(&logs) || path.starts_with(&format!("{state}/")),
                        "{place}: {path} is in neither {logs} nor {state}/"
                    );
                }
                if let Some(path) = quoted("state_dir = \"").filter(|p| p.starts_with("/var/")) {
                    seen += 1;
                    assert_eq!(path, state, "{place}");
                }
            }
        }
        assert!(seen >= 3, "found only {seen} documented paths");
    }

    /// `cargo xtask install`'s man pages and completions: generated by the built binary and
    /// copied to the standard directories under the prefix.
    #[test]
    fn man_pages_and_completions_are_installed_under_the_prefix() {
        let bin = PathBuf::from(
            std::env::var_os("PORTSENTRY_BIN")
                .expect("PORTSENTRY_BIN is not set: run the tests with `cargo xtask test`"),
        );
        let dir = std::env::temp_dir().join(format!("portsentry-docs-{}", std::process::id()));
        let generated = generate_docs(&bin, &dir.join("gen")).unwrap();
        let prefix = dir.join("prefix");
        install_docs(&generated, &prefix).unwrap();
        for (file, marker) in [
            ("share/man/man8/portsentry.8", ".TH portsentry 8 "),
            ("share/man/man8/portsentry-run.8", ".TH portsentry-run 8 "),
            (
                "share/man/man8/portsentry-import-conf.8",
                ".TH portsentry-import-conf 8 ",
            ),
            (
                "share/bash-completion/completions/portsentry",
                "complete -F _portsentry",
            ),
            (
                "share/zsh/site-functions/_portsentry",
                "#compdef portsentry",
            ),
            (
                "share/fish/vendor_completions.d/portsentry.fish",
                "complete -c portsentry",
            ),
        ] {
            let text =
                fs::read_to_string(prefix.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(text.contains(marker), "{file}: {text}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
