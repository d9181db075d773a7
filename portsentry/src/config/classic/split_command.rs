//! The shell-like argv splitter for imported hook commands: whitespace, quotes, backslashes
//! and our `$TARGET$`/`$PORT$`/`$MODE$` placeholders. Anything else a shell would act on is
//! refused with the reason, because hooks never run through a shell. Pure text: knows no
//! config keys and writes no TOML.

/// The classic placeholders we also understand; any other `$` needs a shell.
const PLACEHOLDERS: &[&str] = &["$TARGET$", "$PORT$", "$MODE$"];

/// Splits a plain command line into argv like a shell would (whitespace, quotes, backslash),
/// or says why it needs a real shell.
pub(super) fn split_command(cmd: &str) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("an unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("an unterminated double quote".into()),
                        },
                        Some('$') => cur.push_str(&placeholder(&mut chars)?),
                        Some('`') => return Err("command substitution (`…`)".into()),
                        Some(c) => cur.push(c),
                        None => return Err("an unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("a trailing backslash".into()),
                }
            }
            '$' => {
                in_word = true;
                cur.push_str(&placeholder(&mut chars)?);
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '`' => {
                return Err(format!("the shell operator `{c}`"));
            }
            '*' | '?' | '[' | '~' => return Err(format!("the shell wildcard `{c}`")),
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        argv.push(cur);
    }
    match argv.first() {
        None => return Err("it is empty".into()),
        Some(program) if program.is_empty() => return Err("the program name is empty".into()),
        Some(_) => {}
    }
    Ok(argv)
}

/// After a `$`: one of our placeholders (returned whole), else an error (a shell variable).
fn placeholder(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    let rest: String = chars.clone().collect();
    for p in PLACEHOLDERS {
        if rest.starts_with(&p[1..]) {
            for _ in 1..p.len() {
                chars.next();
            }
            return Ok((*p).to_owned());
        }
    }
    Err(format!(
        "the shell expansion `${}`",
        rest.chars().take(10).collect::<String>()
    ))
}
