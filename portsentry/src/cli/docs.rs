//! Man pages and shell completions, generated from the clap definitions in `cli/mod.rs`, so
//! they say exactly what `--help` says. The hidden verb `portsentry generate-docs DIR` writes
//! them; `cargo xtask man` and `cargo xtask install` run it.
//!
//! Layout of DIR: `man8/portsentry.8` and one `man8/portsentry-VERB.8` per verb;
//! `completions/portsentry.bash`, `completions/_portsentry` (zsh), `completions/portsentry.fish`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use clap_complete::Shell;
use thiserror::Error;

use super::Cli;

/// The man section: portsentry is a system administration daemon.
const SECTION: &str = "8";

/// The verbs a user sees (hidden ones, like `generate-docs`, excluded).
pub fn verbs() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect()
}

/// A file of the docs that could not be made.
#[derive(Debug, Error)]
pub enum DocsError {
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rendering the man page {page}")]
    Render {
        page: String,
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the man pages and completions under `dir`; returns the files written.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let mut written = Vec::new();
    // clap's own `help` verb gets no page, so the main page does not list it.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Propagates global options (--config, --state-dir, --pin-dir) into every verb's page.
    cmd.build();
    let man = dir.join("man8");
    create_dir(&man)?;
    let mut pages = vec![(cmd.get_name().to_owned(), cmd.clone())];
    let verbs = verbs();
    for sub in cmd
        .get_subcommands()
        .filter(|c| verbs.iter().any(|v| v == c.get_name()))
    {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        // The version line of each page; the verb's own Command has none.
        let page = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((name, page));
    }
    for (name, page) in pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page)
            .section(SECTION)
            .render(&mut roff)
            .map_err(|source| DocsError::Render {
                page: name.clone(),
                source,
            })?;
        written.push(write(&man.join(format!("{name}.{SECTION}")), &roff)?);
    }

    let completions = dir.join("completions");
    create_dir(&completions)?;
    for (shell, file) in [
        (Shell::Bash, "portsentry.bash"),
        (Shell::Zsh, "_portsentry"),
        (Shell::Fish, "portsentry.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "portsentry", &mut script);
        written.push(write(&completions.join(file), &script)?);
    }
    Ok(written)
}

fn create_dir(path: &Path) -> Result<(), DocsError> {
    fs::create_dir_all(path).map_err(|source| DocsError::Create {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, DocsError> {
    fs::write(path, bytes).map_err(|source| DocsError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// roff escapes '-' as "\-" in running text; undo it to search the page as a reader sees it.
    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap().replace("\\-", "-")
    }

    #[test]
    fn the_man_page_names_every_verb_and_each_verb_has_a_page() {
        let dir = std::env::temp_dir().join(format!("ps-docs-{}", std::process::id()));
        let written = generate(&dir).unwrap();
        let verbs = verbs();
        for verb in [
            "run",
            "status",
            "list",
            "ban",
            "unban",
            "promote-shadow",
            "check-config",
            "import-conf",
        ] {
            assert!(verbs.iter().any(|v| v == verb), "{verb} in {verbs:?}");
        }
        assert!(!verbs.iter().any(|v| v == "generate-docs"), "hidden");
        let main = read(&dir.join("man8/portsentry.8"));
        assert!(main.starts_with(".ie \\n(.g .ds Aq"), "roff: {main}");
        assert!(main.contains(".TH portsentry 8 "), "{main}");
        for verb in &verbs {
            assert!(
                main.contains(&format!("portsentry-{verb}(8)")),
                "portsentry.8 lists {verb}: {main}"
            );
            let page = read(&dir.join(format!("man8/portsentry-{verb}.8")));
            assert!(
                page.contains(&format!(".TH portsentry-{verb} 8 ")),
                "{page}"
            );
            // Global options reach every verb's page.
            assert!(page.contains("--config"), "{verb}: {page}");
        }
        assert!(!main.contains("generate-docs"), "hidden verbs stay hidden");
        assert!(!main.contains("portsentry-help"), "no page, so not listed");
        let run = read(&dir.join("man8/portsentry-run.8"));
        assert!(run.contains("--history-file") && run.contains("--tcp-ports"));
        for (file, marker) in [
            ("portsentry.bash", "complete -F _portsentry"),
            ("_portsentry", "#compdef portsentry"),
            ("portsentry.fish", "complete -c portsentry"),
        ] {
            let script = fs::read_to_string(dir.join("completions").join(file)).unwrap();
            assert!(script.contains(marker), "{file}: {script}");
            for verb in &verbs {
                assert!(script.contains(verb.as_str()), "{file} completes {verb}");
            }
        }
        assert_eq!(written.len(), 1 + verbs.len() + 3);
        let _ = fs::remove_dir_all(&dir);
    }
}
