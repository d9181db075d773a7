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

    let unit = fs::read_to_string(root.join("dist/portsentry.service"))
        .context("reading dist/portsentry.service")?
        .replace("@SBINDIR@", &sbin.display().to_string())
        .replace("@SYSCONFDIR@", &sysconfdir.display().to_string())
        .replace(
            "/usr/local/share/doc/portsentry",
            &doc_dir.display().to_string(),
        );
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

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    println!("installed {}", to.display());
    Ok(())
}
