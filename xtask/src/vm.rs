//! `cargo xtask test --kernel K`: the test binaries inside Debian's own kernels, booted in qemu.
//!
//! This module owns the kernel lane: which Debian kernels we test ([`KERNELS`]), fetching one
//! (`apt-get download` + `dpkg-deb -x` under `target/kernels/`, never installed, nothing in the
//! host's /boot; suites the host does not list go through a private apt config under
//! `target/kernels/apt-SUITE`, the host's /etc/apt is never edited), and running already-built
//! test binaries inside the VM with the environment `cargo xtask test` gives them. Booting is
//! `xtask/vm/boot.sh`: a busybox initramfs, the host's / shared read-only over 9p, a writable
//! share for the results, software emulation unless `ACCEL=kvm`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::build;

/// A Debian kernel the lane can boot.
pub struct Kernel {
    /// What `--kernel` takes.
    pub label: &'static str,
    /// `None`: the host's own apt sources (Debian 12). Otherwise (archive, suite) through a
    /// private apt config naming the host's mirror.
    source: Option<(Archive, &'static str)>,
    /// The metapackage whose `linux-image-N…` dependencies are the kernel (from 7.x split into
    /// `linux-binary-N…`, `linux-modules-N…` and `linux-base-N…`).
    meta: &'static str,
    /// Whether `--kernel all` runs it: the kernels portsentry supports. 5.10 is below the
    /// minimum and is booted only to check that `portsentry run` refuses clearly.
    supported: bool,
}

#[derive(Clone, Copy)]
enum Archive {
    Debian,
    Security,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        label: "5.10",
        source: Some((Archive::Security, "bullseye-security")),
        meta: "linux-image-amd64",
        supported: false,
    },
    Kernel {
        label: "6.1",
        source: None,
        meta: "linux-image-amd64",
        supported: true,
    },
    Kernel {
        label: "6.12",
        source: None,
        meta: "linux-image-6.12-amd64",
        supported: true,
    },
    Kernel {
        label: "newest",
        source: Some((Archive::Debian, "trixie-backports")),
        meta: "linux-image-amd64",
        supported: true,
    },
];

/// The kernels `--kernel` names: one label, or `all` (the supported ones).
pub fn select(name: &str) -> Result<Vec<&'static Kernel>> {
    if name == "all" {
        return Ok(KERNELS.iter().filter(|k| k.supported).collect());
    }
    KERNELS
        .iter()
        .find(|k| k.label == name)
        .map(|k| vec![k])
        .with_context(|| {
            let labels: Vec<_> = KERNELS.iter().map(|k| k.label).collect();
            format!(
                "no kernel `{name}`: choose one of {} or all",
                labels.join(", ")
            )
        })
}

/// Client tools the lane runs on the host, installed like the test tools.
pub const VM_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "qemu-system-x86_64",
        "qemu-system-x86",
        "booting Debian's kernels for `--kernel`",
    ),
    ("busybox", "busybox-static", "the VM's initramfs"),
    ("depmod", "kmod", "the VM kernels' module dependencies"),
];

/// A fetched kernel: the unpacked packages and the version they hold.
pub struct Fetched {
    pub root: PathBuf,
    pub version: String,
}

/// Fetches (or reuses) `kernel` under `target/kernels/LABEL`. Delete that directory to fetch
/// the suite's current build again.
pub fn fetch(kernel: &Kernel, target: &Path) -> Result<Fetched> {
    let dir = target.join("kernels").join(kernel.label);
    let root = dir.join("root");
    if let Some(version) = unpacked_version(&root) {
        return Ok(Fetched { root, version });
    }
    let apt_config = match kernel.source {
        Some((archive, suite)) => Some(private_apt(target, archive, suite)?),
        None => None,
    };
    let apt = |tool: &str| {
        let mut c = Command::new(tool);
        if let Some(conf) = &apt_config {
            c.env("APT_CONFIG", conf);
        }
        c
    };
    let out = apt("apt-cache")
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            kernel.meta,
        ])
        .output()
        .context("running apt-cache depends")?;
    let mut packages: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter(|l| {
            [
                "linux-image-",
                "linux-binary-",
                "linux-modules-",
                "linux-base-",
            ]
            .iter()
            .any(|p| {
                l.strip_prefix(p)
                    .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .map(str::to_owned)
        .collect();
    packages.sort();
    packages.dedup();
    if packages.is_empty() {
        bail!(
            "apt-cache found no kernel package behind {} for {} ({})",
            kernel.meta,
            kernel.label,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    eprintln!(
        "xtask: fetching Debian's kernel {} ({}) into {}: apt-get download + dpkg-deb -x, never installed",
        kernel.label,
        packages.join(" "),
        dir.display()
    );
    let status = apt("apt-get")
        .args(["download", "-qq"])
        .args(&packages)
        .current_dir(&debs)
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!(
            "`apt-get download {}` failed (for kernel {}; run `apt-get update` if the host's lists are old)",
            packages.join(" "),
            kernel.label
        );
    }
    for deb in std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
    {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .context("running dpkg-deb")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
    }
    let version = unpacked_version(&root)
        .with_context(|| format!("{} holds no boot/vmlinuz-* after unpacking", root.display()))?;
    let _ = std::fs::remove_dir_all(&debs);
    Ok(Fetched { root, version })
}

/// The version of the kernel unpacked at `root`, if there is one: boot/vmlinuz-VERSION, or
/// usr/lib/modules/VERSION/vmlinuz as 7.x packages place it.
fn unpacked_version(root: &Path) -> Option<String> {
    let names = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
    };
    names(root.join("boot"))
        .find_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
        .or_else(|| {
            names(root.join("usr/lib/modules")).find(|v| {
                root.join("usr/lib/modules")
                    .join(v)
                    .join("vmlinuz")
                    .is_file()
            })
        })
}

/// Writes `target/kernels/apt-SUITE/apt.conf`: one source line for `suite` on the host's
/// mirror, its own lists and cache, no dpkg status (nothing counts as installed), and runs
/// `apt-get update` with it. Returns the config's path, for `APT_CONFIG`.
fn private_apt(target: &Path, archive: Archive, suite: &str) -> Result<PathBuf> {
    let dir = target.join("kernels").join(format!("apt-{suite}"));
    for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let mirror = host_mirror(archive);
    std::fs::write(
        dir.join("sources.list"),
        format!("deb {mirror} {suite} main\n"),
    )?;
    let d = dir.display();
    let conf = dir.join("apt.conf");
    std::fs::write(
        &conf,
        format!(
            "Dir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/sources.list.d\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Dir::State::status \"/dev/null\";\n\
             Acquire::Languages \"none\";\n"
        ),
    )?;
    let status = Command::new("apt-get")
        .args(["update", "-qq"])
        .env("APT_CONFIG", &conf)
        .status()
        .context("running apt-get update")?;
    if !status.success() {
        bail!(
            "`APT_CONFIG={} apt-get update` failed ({suite} on {mirror})",
            conf.display()
        );
    }
    Ok(conf)
}

/// The host's Debian mirror for `archive`, from its apt sources (deb822 or one-line), else
/// deb.debian.org.
fn host_mirror(archive: Archive) -> String {
    let want = match archive {
        Archive::Debian => "/debian",
        Archive::Security => "/debian-security",
    };
    let mut text = String::new();
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        text.push('\n');
    }
    text.split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|w| w.trim_end_matches('/'))
        .find(|w| w.ends_with(want))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http://deb.debian.org{want}"))
}

/// What runs inside the VM: test binaries, each with its arguments, in this environment.
pub struct Run {
    pub binaries: Vec<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Outcome of one kernel's run.
pub struct Outcome {
    pub version: String,
    pub passed: bool,
    pub seconds: u64,
}

/// Boots `kernel` and runs `run` inside; the console streams to stdout.
pub fn run_in(kernel: &Kernel, fetched: &Fetched, run: &Run, target: &Path) -> Result<Outcome> {
    let out = target.join("kernels").join(kernel.label).join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut script = String::from("#!/bin/sh\n# written by cargo xtask test --kernel\nfail=0\n");
    for (k, v) in &run.env {
        writeln!(script, "export {k}={}", sh_quote(v))?;
    }
    // The host's target/ is read-only in the VM: skips are recorded in the writable share.
    let skips = out.join("test-skips.txt");
    writeln!(
        script,
        "export {}={}",
        crate::SKIP_LOG_ENV,
        sh_quote(&skips.to_string_lossy())
    )?;
    // The VM's kernels have what this host lacks (bonds, VLANs): nothing may skip there.
    writeln!(script, "export {}=1", crate::SKIPS_FAIL_ENV)?;
    // cargo runs test binaries in their package's directory; so does the VM.
    let tests_dir = build::workspace_root().join("tests");
    for bin in &run.binaries {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let args: Vec<String> = run.args.iter().map(|a| sh_quote(a)).collect();
        writeln!(
            script,
            "s=$(cut -d. -f1 /proc/uptime); echo \"@@ running {name}\"\n\
             (cd {dir} && {bin} {args}); rc=$?\n\
             echo \"@@ {name}: exit $rc in $(( $(cut -d. -f1 /proc/uptime) - s )) s\"\n\
             [ $rc = 0 ] || fail=1",
            dir = sh_quote(&tests_dir.to_string_lossy()),
            bin = sh_quote(&bin.to_string_lossy()),
            args = args.join(" "),
        )?;
    }
    script.push_str("exit $fail\n");
    let script_path = out.join("run.sh");
    std::fs::write(&script_path, script)?;
    let boot = build::workspace_root().join("xtask/vm/boot.sh");
    println!(
        "xtask: kernel {} ({}): booting in qemu ({}), {} test binar{}",
        kernel.label,
        fetched.version,
        std::env::var("ACCEL").unwrap_or_else(|_| "tcg".into()),
        run.binaries.len(),
        if run.binaries.len() == 1 { "y" } else { "ies" }
    );
    let start = Instant::now();
    // The workspace and its target may lie under /tmp or /root, which the VM covers with tmpfs.
    let keep = format!("{} {}", build::workspace_root().display(), target.display());
    let status = Command::new("bash")
        .env("VM_KEEP", keep)
        .arg(&boot)
        .arg(&fetched.root)
        .arg(&out)
        .args(["sh", "./run.sh"])
        .status()
        .with_context(|| format!("running {}", boot.display()))?;
    if let Ok(text) = std::fs::read_to_string(&skips) {
        for line in text.lines() {
            println!("xtask: kernel {}: {line}", kernel.label);
        }
    }
    Ok(Outcome {
        version: fetched.version.clone(),
        passed: status.success(),
        seconds: start.elapsed().as_secs(),
    })
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The test binaries `cargo test ARGS` would run, built if needed (`--no-run`), from cargo's
/// JSON messages.
pub fn test_binaries(cargo_args: &[String], env: &[(String, String)]) -> Result<Vec<PathBuf>> {
    let mut cmd = build::cargo();
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json",
        "--workspace",
        "--exclude",
        "portsentry-ebpf",
    ])
    .args(cargo_args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // Test harnesses only (profile.test), not the plain binaries built for the integration tests.
    let bins: Vec<PathBuf> = text
        .lines()
        .filter(|l| l.contains("\"test\":true"))
        .filter_map(|l| l.split("\"executable\":\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(PathBuf::from)
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("deps")))
        .collect();
    if bins.is_empty() {
        bail!("cargo test {} selects no test binary", cargo_args.join(" "));
    }
    Ok(bins)
}

/// Splits `cargo xtask test` arguments into cargo's (which binaries) and the binaries' own
/// (the name filter and everything after `--`).
pub fn split_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    const WITH_VALUE: &[&str] = &[
        "--test",
        "-p",
        "--package",
        "--exclude",
        "--features",
        "-F",
        "--bin",
        "--example",
        "--bench",
        "-j",
        "--jobs",
        "--profile",
        "--target",
    ];
    let (mut cargo, mut bin) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            bin.extend(it.by_ref().cloned());
        } else if WITH_VALUE.contains(&a.as_str()) {
            cargo.push(a.clone());
            cargo.extend(it.next().cloned());
        } else if a.starts_with('-') {
            cargo.push(a.clone());
        } else {
            bin.push(a.clone());
        }
    }
    (cargo, bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cargo_and_binary_arguments_are_split() {
        let (c, b) = split_args(&s(&[
            "--test",
            "e2e",
            "connect_to",
            "--",
            "--exact",
            "--nocapture",
        ]));
        assert_eq!(c, s(&["--test", "e2e"]));
        assert_eq!(b, s(&["connect_to", "--exact", "--nocapture"]));
        let (c, b) = split_args(&s(&["-p", "xtask", "--lib"]));
        assert_eq!((c, b), (s(&["-p", "xtask", "--lib"]), vec![]));
    }

    #[test]
    fn all_is_the_supported_kernels_and_unknown_names_list_the_choices() {
        let all: Vec<_> = select("all").unwrap().iter().map(|k| k.label).collect();
        assert_eq!(all, ["6.1", "6.12", "newest"]);
        assert_eq!(select("5.10").unwrap()[0].label, "5.10");
        let e = select("5.15").err().unwrap().to_string();
        assert!(e.contains("5.10, 6.1, 6.12, newest or all"), "{e}");
    }
}
