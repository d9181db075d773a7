//! The helper without an owner: a toy format (`{"version": N, "n": …}`, versions 1 to 2).

use super::*;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ps-state-file-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn toy(dir: &Path) -> StateFile {
    StateFile::new(dir, "toy.json", "toy file")
}

fn parse_toy(text: &str) -> Result<u64, Unfit> {
    #[derive(Deserialize)]
    struct Toy {
        n: u64,
    }
    json_version(text, 1, 2)?;
    Ok(serde_json::from_str::<Toy>(text)?.n)
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// Opens a file holding `bytes`; returns the outcome's line and the one kept-aside file's
/// name and contents.
fn open_aside(dir: &Path, bytes: &[u8]) -> (String, String, Vec<u8>) {
    let file = toy(dir);
    fs::write(file.path(), bytes).unwrap();
    let unusable = file.open(parse_toy).unwrap_err();
    let Kept::Aside(moved) = &unusable.kept else {
        panic!("not kept aside: {unusable:?}");
    };
    assert!(!file.path().exists(), "the file is gone from its place");
    let name = moved.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        names(dir),
        std::slice::from_ref(&name),
        "only the kept file is left"
    );
    let line = unusable.line("starting without toys");
    (line, name, fs::read(moved).unwrap())
}

#[test]
fn atomic_write_replaces_the_file_and_leaves_no_temporary_file() {
    let dir = tmpdir("write");
    let file = StateFile::new(&dir.join("made"), "toy.json", "toy file");
    file.write(b"{\"version\": 1, \"n\": 1}").unwrap();
    file.write_with(|w| w.write_all(b"{\"version\": 2, \"n\": 2}"))
        .unwrap();
    assert_eq!(file.load(parse_toy).unwrap(), Some(2));
    assert_eq!(names(file.dir()), ["toy.json"], "no temporary file left");
    // A write that fails half way leaves the old file and no temporary one.
    let failed = file.write_with(|w| {
        w.write_all(b"{\"vers")?;
        Err(io::Error::other("disk full"))
    });
    assert!(
        matches!(failed, Err(StateFileError::Io { .. })),
        "{failed:?}"
    );
    assert_eq!(file.load(parse_toy).unwrap(), Some(2));
    assert_eq!(names(file.dir()), ["toy.json"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_file_is_none_and_loading_never_moves_a_bad_one() {
    let dir = tmpdir("load");
    let file = toy(&dir);
    assert_eq!(file.load(parse_toy).unwrap(), None);
    assert_eq!(file.open(parse_toy).unwrap(), None);
    fs::write(file.path(), "{ not json").unwrap();
    let err = file.load(parse_toy).unwrap_err();
    assert!(matches!(err, StateFileError::Corrupt { .. }), "{err}");
    assert_eq!(names(&dir), ["toy.json"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_file_is_kept_aside_byte_for_byte_with_one_line() {
    let dir = tmpdir("corrupt");
    let path = dir.join("toy.json");
    // Not even text: a damaged file like any other, not a read error.
    for bytes in [
        &b"{ not json"[..],
        b"\xff\xfe{\"version\": 1}\n",
        b"{\"version\": 0}",
    ] {
        let (line, name, kept) = open_aside(&dir, bytes);
        assert!(name.starts_with("toy.json.corrupt-"), "{name}");
        assert_eq!(kept, bytes, "the kept file is the original");
        let head = format!(
            "portsentry: error: {}: not a portsentry toy file (",
            path.display()
        );
        let tail = format!(
            "); kept aside as {}; starting without toys",
            dir.join(&name).display()
        );
        assert!(line.starts_with(&head) && line.ends_with(&tail), "{line}");
        fs::remove_file(dir.join(name)).unwrap();
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_newer_file_is_kept_aside_byte_for_byte_with_one_line() {
    let dir = tmpdir("newer");
    let bytes = b"{\"version\": 7, \"n\": \"a format to come\"}";
    let (line, name, kept) = open_aside(&dir, bytes);
    assert!(name.starts_with("toy.json.newer-"), "{name}");
    assert_eq!(kept, bytes);
    assert_eq!(
        line,
        format!(
            "portsentry: error: {}: toy file version 7 is newer than this portsentry understands (2); kept aside as {}; starting without toys",
            dir.join("toy.json").display(),
            dir.join(&name).display()
        )
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_kept_file_is_never_overwritten() {
    let dir = tmpdir("twice");
    let file = toy(&dir);
    let mut kept = Vec::new();
    for i in 0..3 {
        fs::write(file.path(), format!("damaged {i}")).unwrap();
        match file.open(parse_toy).unwrap_err().kept {
            Kept::Aside(moved) => kept.push(moved),
            other => panic!("{other:?}"),
        }
    }
    let mut contents: Vec<String> = kept
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    contents.sort();
    assert_eq!(contents, ["damaged 0", "damaged 1", "damaged 2"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreadable_directory_is_a_typed_error_and_nothing_is_moved() {
    let dir = tmpdir("unreadable");
    // A directory that is a file: every user, root included, fails on it.
    let not_a_dir = dir.join("state");
    fs::write(&not_a_dir, "a file").unwrap();
    let file = toy(&not_a_dir);
    let err = file.load(parse_toy).unwrap_err();
    assert!(
        matches!(&err, StateFileError::Io { path, .. } if *path == file.path()),
        "{err}"
    );
    let unusable = file.open(parse_toy).unwrap_err();
    assert!(matches!(unusable.kept, Kept::InPlace), "{unusable:?}");
    let want = format!(
        "portsentry: error: {}: Not a directory (os error 20); starting without toys",
        file.path().display()
    );
    assert_eq!(unusable.line("starting without toys"), want);
    // In a chain (the CLI prints `{:#}`) the cause is worded once.
    let chained = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(chained.matches("Not a directory").count(), 1, "{chained}");
    let err = file.write(b"{}").unwrap_err();
    assert!(matches!(err, StateFileError::Io { .. }), "{err}");
    assert_eq!(fs::read_to_string(&not_a_dir).unwrap(), "a file");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_version_sorts_old_current_and_newer() {
    assert_eq!(json_version(r#"{"version": 1}"#, 1, 3), Ok(1));
    assert_eq!(json_version(r#"{"version": 3, "x": []}"#, 1, 3), Ok(3));
    assert_eq!(
        json_version(r#"{"version": 4}"#, 1, 3),
        Err(Unfit::TooNew {
            found: 4,
            supported: 3
        })
    );
    assert_eq!(
        json_version(r#"{"version": 0}"#, 1, 3),
        Err(Unfit::Corrupt("unknown version 0".into()))
    );
    assert!(matches!(json_version("[]", 1, 3), Err(Unfit::Corrupt(_))));
}

#[test]
fn a_link_at_the_temporary_name_is_replaced_not_followed() {
    let dir = tmpdir("planted-link");
    let victim = dir.join("victim");
    fs::write(&victim, "keep me").unwrap();
    let tmp = dir.join(format!(".toy.json.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    write_atomic(&dir, "toy.json", b"{}").unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(fs::read_to_string(dir.join("toy.json")).unwrap(), "{}");
    assert!(
        !tmp.exists() && tmp.symlink_metadata().is_err(),
        "no temporary file left"
    );
    fs::remove_dir_all(&dir).unwrap();
}
