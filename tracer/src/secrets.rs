//! What looks like a secret: names of variables and flags that carry one,
//! values that are credentials, and the redaction of command lines. The
//! webhook refuses such literals in its settings; `metadata.json` stores
//! traced command lines with their values replaced by [`REDACTED`].

/// Parts of a variable name that mark it as a secret (compared upper-case).
pub const SECRET_NAME_PARTS: [&str; 9] =
    ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "APIKEY", "PRIVATE_KEY", "ACCESS_KEY"];

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Whether a variable name (`HF_TOKEN`, `db_password`) names a secret: it
/// holds one of [`SECRET_NAME_PARTS`].
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
}

/// Whether a command-line flag or `KEY=VALUE` name carries a secret: a
/// secret variable name (dashes read as underscores, so `--hf-token` and
/// `--ssl-keyfile-password` count) or any name ending in `key` (`--api-key`,
/// `--hf-key`, `OPENAI_KEY`).
pub fn is_secret_flag(name: &str) -> bool {
    let name = name.trim_start_matches('-').replace('-', "_");
    is_secret_name(&name) || name.to_ascii_uppercase().ends_with("KEY")
}

/// Why `value` looks like a credential, if it does: AWS access key ids,
/// Hugging Face tokens, PEM private keys, URLs with a password.
pub fn credential_kind(value: &str) -> Option<&'static str> {
    let v = value.trim();
    let aws_key_id = (v.starts_with("AKIA") || v.starts_with("ASIA"))
        && v.len() == 20
        && v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if aws_key_id {
        return Some("the value is an AWS access key id");
    }
    if v.strip_prefix("hf_").is_some_and(|t| t.len() >= 30 && t.chars().all(|c| c.is_ascii_alphanumeric())) {
        return Some("the value is a Hugging Face token");
    }
    if v.contains("-----BEGIN") && v.contains("PRIVATE KEY") {
        return Some("the value is a private key");
    }
    // `user:password@` before the host. Up to the first `@`, not the first
    // `/`: a password may hold a `/` that its writer did not escape.
    let userinfo = v.split_once("://").and_then(|(_, rest)| rest.split_once('@')).map(|(before, _)| before);
    if userinfo.is_some_and(|u| u.contains(':') && !u.contains(['?', '#'])) {
        return Some("the URL carries a password");
    }
    None
}

/// A command line with every secret value replaced by [`REDACTED`]:
/// the value after a secret flag (`--api-key VALUE`, unless the next word
/// is itself a `--flag`), the value of `--api-key=VALUE` and of env-style
/// `HF_TOKEN=VALUE` words, and any word that is a credential by itself
/// ([`credential_kind`]). Flag names stay, so the command still reads.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut value_next = false;
    for arg in argv {
        if std::mem::take(&mut value_next) && !arg.starts_with("--") {
            out.push(REDACTED.to_string());
            continue;
        }
        out.push(redact_word(arg, &mut value_next));
    }
    out
}

/// One word of a command line; sets `value_next` when it is a secret flag
/// whose value is the next word.
fn redact_word(arg: &str, value_next: &mut bool) -> String {
    match arg.split_once('=') {
        Some((name, _)) if name.starts_with('-') && is_secret_flag(name) => return format!("{name}={REDACTED}"),
        Some((name, _)) if is_env_name(name) && is_secret_flag(name) => return format!("{name}={REDACTED}"),
        None if arg.starts_with('-') && is_secret_flag(arg) => *value_next = true,
        _ => {}
    }
    match credential_kind(arg) {
        Some(_) => REDACTED.to_string(),
        None => arg.to_string(),
    }
}

/// Whether `name` is an environment variable's name (`[A-Za-z_][A-Za-z0-9_]*`).
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(argv: &[&str]) -> Vec<String> {
        redact_argv(&argv.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn secret_flags_lose_their_values_in_both_forms() {
        let argv = [
            "vllm",
            "serve",
            "m",
            "--api-key",
            "sk-live-1",
            "--api-key=sk-live-2",
            "--hf-token",
            "hf_x",
            "--token=t",
            "--password",
            "-dash-start",
            "--secret",
            "s",
            "--ssl-keyfile-password",
            "p",
            "--openai-key",
            "k",
            "--port",
            "8000",
        ];
        let out = redact(&argv);
        let joined = out.join(" ");
        for secret in ["sk-live-1", "sk-live-2", "hf_x", "=t", "-dash-start", " s ", " p ", " k "] {
            assert!(!joined.contains(secret), "{secret} kept: {joined}");
        }
        assert_eq!(out[3..6], ["--api-key".to_string(), REDACTED.to_string(), format!("--api-key={REDACTED}")]);
        assert!(joined.ends_with("--port 8000"), "{joined}");
        assert_eq!(out.len(), argv.len());
    }

    #[test]
    fn env_style_words_and_credentials_are_redacted() {
        let out = redact(&[
            "env",
            "HF_TOKEN=hf_abc",
            "AWS_SECRET_ACCESS_KEY=x/y",
            "DB_PASSWORD=pw",
            "MODEL=llama",
            "AKIAIOSFODNN7EXAMPLE",
            "http://u:pw@proxy:3128/",
            "a=b=c",
        ]);
        assert_eq!(
            out,
            [
                "env".to_string(),
                format!("HF_TOKEN={REDACTED}"),
                format!("AWS_SECRET_ACCESS_KEY={REDACTED}"),
                format!("DB_PASSWORD={REDACTED}"),
                "MODEL=llama".into(),
                REDACTED.into(),
                REDACTED.into(),
                "a=b=c".into(),
            ]
        );
    }

    #[test]
    fn a_secret_flag_followed_by_a_flag_keeps_that_flag() {
        assert_eq!(redact(&["x", "--use-token", "--port", "1"]), ["x", "--use-token", "--port", "1"]);
        assert_eq!(redact(&["x", "--api-key"]), ["x", "--api-key"]);
        assert!(!is_secret_flag("--ssl-keyfile") && !is_secret_flag("--model") && is_secret_flag("--hf-key"));
    }
}
