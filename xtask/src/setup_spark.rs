//! `cargo xtask setup`, Spark part: PySpark from PyPI into its own cache
//! dir and a Java runtime (17 or newer) for it, for the test that runs the
//! lake's Spark SQL job in local mode (`tests/fleet_engines.rs`).

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{paths, setup::pip_into, setup_kube::apt_install};

/// PySpark 4.0 runs on Java 17 or 21 and Python 3.9 or newer; its jars
/// (Spark and Hadoop's client, about 470 MB) come with the package.
const PYSPARK: &str = "pyspark==4.0.1";
/// The oldest Java PySpark 4.0 runs on.
const JAVA_MIN: u32 = 17;
/// Debian's Java runtime, installed when `java` on PATH is missing or older.
const DEBIAN_JRE: &str = "openjdk-17-jre-headless";

pub fn run() -> Result<()> {
    pip_into(&paths::pyspark(), &[PYSPARK])?;
    if java_major("java").is_some_and(|v| v >= JAVA_MIN) {
        return Ok(());
    }
    apt_install(&[DEBIAN_JRE])
        .with_context(|| format!("installing Debian's {DEBIAN_JRE} (Java for PySpark) failed"))?;
    match java_major(&debian_java_home().join("bin/java").to_string_lossy()) {
        Some(v) if v >= JAVA_MIN => Ok(()),
        _ => bail!("{DEBIAN_JRE} is installed but its java does not run"),
    }
}

/// The major version `java -version` reports (`"17.0.15"` → 17, `"1.8.0_412"` → 8).
fn java_major(java: &str) -> Option<u32> {
    let out = Command::new(java).arg("-version").output().ok()?;
    major_of(&String::from_utf8_lossy(&out.stderr))
}

/// The major version in `java -version`'s text.
fn major_of(text: &str) -> Option<u32> {
    let version = text.split('"').nth(1)?;
    let mut parts = version.split(['.', '_', '-', '+']);
    match parts.next()?.parse().ok()? {
        1 => parts.next()?.parse().ok(),
        major => Some(major),
    }
}

/// Where Debian's Java 17 lives.
fn debian_java_home() -> PathBuf {
    PathBuf::from(format!("/usr/lib/jvm/java-{JAVA_MIN}-openjdk-{}", debian_arch()))
}

fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// The Java home the tests hand PySpark: `JAVA_HOME` when set, else that of
/// `java` on PATH when it is new enough, else Debian's Java 17.
pub fn java_home() -> PathBuf {
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        return home.into();
    }
    let on_path = which_java().filter(|java| java_major(&java.to_string_lossy()).is_some_and(|v| v >= JAVA_MIN));
    // …/jvm/<name>/bin/java → …/jvm/<name>
    on_path.and_then(|java| Some(java.parent()?.parent()?.to_path_buf())).unwrap_or_else(debian_java_home)
}

/// `java` on PATH with its links resolved.
fn which_java() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("java")).find(|p| p.is_file())?.canonicalize().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn java_versions_old_and_new() {
        assert_eq!(super::major_of("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime"), Some(17));
        assert_eq!(super::major_of("java version \"1.8.0_412\""), Some(8));
        assert_eq!(super::major_of("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(super::major_of("no java here"), None);
    }
}
