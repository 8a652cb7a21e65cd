//! The `code` kind's input and output, and `GET /v1/languages`.
//!
//! A `code` task compiles a program once and runs it, either against its own
//! `stdin`/`expected_output` (one run) or against `tests` (one run per test,
//! with the same limits). See `docs/judging.md` for the rules.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Largest JSON `output` of one task result the server takes (8 MiB). The
/// `code` executor keeps its results within it (it truncates the carried
/// copies of stdout/stderr explicitly, see [`CodeOutput`]); a result over the
/// server's limit is recorded as a failed attempt of kind `result_too_large`,
/// never dropped.
pub const MAX_RESULT_BYTES: usize = 8 << 20;

/// Most tests in one `code` task.
pub const MAX_TESTS: usize = 100;

/// The `code` kind's input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CodeInput {
    /// `python`, `c`, `cpp`, `java`, `rust`, `javascript` or `bash`.
    #[serde(default)]
    pub language: Option<String>,
    /// The program's source.
    #[serde(default)]
    pub source: Option<String>,
    /// Standard input of the single run (without `tests`).
    #[serde(default)]
    pub stdin: String,
    /// Arguments of the single run (each test has its own).
    #[serde(default)]
    pub args: Vec<String>,
    /// Expected stdout of the single run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// Limits of every run.
    #[serde(default)]
    pub limits: CodeLimits,
    /// Tests: compiled once, run once each (1..=100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<CodeTest>>,
    /// How stdout is compared with the expected output (default `trim`).
    #[serde(default)]
    pub compare: Compare,
    /// A program that judges the output instead of `compare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker: Option<Checker>,
    /// Stop at the first test that is not accepted.
    #[serde(default)]
    pub stop_on_failure: bool,
}

/// Limits of one run; absent fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CodeLimits {
    /// CPU time of the whole process tree (default 2000, max 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Wall-clock time (default 5000, max 120000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
    /// Memory of the whole tree (default 262144, max 4194304).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_kb: Option<u64>,
    /// Processes and threads (default 32, max 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// stdout and, separately, stderr (default 1024, max 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_kb: Option<u64>,
}

/// One test of a `code` task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CodeTest {
    /// Its name in the results (default `t1`, `t2`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Standard input.
    #[serde(default)]
    pub stdin: String,
    /// Expected stdout (absent: any output is accepted, unless a checker decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// Arguments appended to the run command.
    #[serde(default)]
    pub args: Vec<String>,
}

/// How a program's stdout is compared with the expected output.
#[derive(Debug, Clone, Copy, Default, PartialEq, ToSchema)]
pub enum Compare {
    /// `"trim"` (default), `"exact"` or `"tokens"`.
    Mode(CompareMode),
    /// `{"float": 1e-6}`: numbers within that absolute or relative tolerance.
    Float {
        /// The tolerance (0 to 1).
        float: f64,
    },
    /// The default: `trim` (absent or `null` on the wire).
    #[default]
    Default,
}

impl Serialize for Compare {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Mode(m) => m.serialize(s),
            Self::Float { float } => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("float", float)?;
                map.end()
            }
            Self::Default => CompareMode::Trim.serialize(s),
        }
    }
}

/// The named compare modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompareMode {
    /// Trailing whitespace of every line and of the whole output is ignored.
    Trim,
    /// Byte for byte.
    Exact,
    /// The same whitespace-separated tokens.
    Tokens,
}

impl<'de> Deserialize<'de> for Compare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Float {
            float: f64,
        }
        let v = serde_json::Value::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(
                "compare must be \"trim\", \"exact\", \"tokens\" or {\"float\": <tolerance 0..1>}",
            )
        };
        match v {
            serde_json::Value::String(s) => match s.as_str() {
                "trim" => Ok(Self::Mode(CompareMode::Trim)),
                "exact" => Ok(Self::Mode(CompareMode::Exact)),
                "tokens" => Ok(Self::Mode(CompareMode::Tokens)),
                _ => Err(bad()),
            },
            serde_json::Value::Null => Ok(Self::Default),
            v @ serde_json::Value::Object(_) => {
                let f: Float = serde_json::from_value(v).map_err(|_| bad())?;
                if f.float.is_finite() && (0.0..=1.0).contains(&f.float) {
                    Ok(Self::Float { float: f.float })
                } else {
                    Err(bad())
                }
            }
            _ => Err(bad()),
        }
    }
}

/// A checker: a program run in the sandbox after each test, with the files
/// `input`, `expected` and `output` in its working directory. Exit 0 accepts,
/// exit 1 rejects (wrong answer); its stdout is the test's `comment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checker {
    /// Its language (any the worker runs).
    pub language: String,
    /// Its source.
    pub source: String,
}

/// The `code` kind's output. Without `tests` it is one run's fields
/// (`exit_code` ... `memory_kb`); with `tests` it has `passed`, `total` and
/// `tests` instead of `exit_code`, `signal`, `stdout` and `stderr`.
///
/// `stdout` and `stderr` are text when the program wrote valid UTF-8;
/// otherwise they hold the bytes in base64 and `stdout_encoding` /
/// `stderr_encoding` say `"base64"`. When the whole result would exceed
/// [`MAX_RESULT_BYTES`], the carried copies are cut and `stdout_truncated` /
/// `stderr_truncated` say so (the verdict was still made on the whole output).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CodeOutput {
    /// The verdict (of the first test not accepted, else `accepted`).
    pub verdict: String,
    /// Why the sandbox failed (`internal_error` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Tests accepted (with `tests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<u32>,
    /// Tests given (with `tests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// Compiler output.
    #[serde(default)]
    pub compile_output: String,
    /// Per-test results, in order (with `tests`; with `stop_on_failure`
    /// only those that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<TestResult>>,
    /// The single run's exit code, signal and output (without `tests`).
    #[serde(flatten)]
    pub run: Option<RunFields>,
    /// CPU time of the tree (with `tests`: the largest of any test).
    pub time_ms: u64,
    /// Wall-clock time (with `tests`: the largest).
    pub wall_ms: u64,
    /// Peak of the memory cgroup (with `tests`: the largest).
    pub memory_kb: u64,
}

/// What one run reports besides its times.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunFields {
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when it was killed.
    pub signal: Option<i32>,
    /// Its stdout (see [`CodeOutput`] for encoding and truncation).
    pub stdout: String,
    /// `"base64"` when `stdout` is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<String>,
    /// The carried `stdout` was cut to fit the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdout_truncated: bool,
    /// Its stderr.
    pub stderr: String,
    /// `"base64"` when `stderr` is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<String>,
    /// The carried `stderr` was cut to fit the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stderr_truncated: bool,
}

/// One test's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Its verdict.
    pub verdict: String,
    /// The checker's stdout, or what the comparison found.
    #[serde(default)]
    pub comment: String,
    /// The run's exit code, signal and output.
    #[serde(flatten)]
    pub run: RunFields,
    /// CPU time of the tree.
    pub time_ms: u64,
    /// Wall-clock time.
    pub wall_ms: u64,
    /// Peak of the memory cgroup.
    pub memory_kb: u64,
}

/// One entry of `GET /v1/languages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LanguageView {
    /// Its name in `code` input.
    pub language: String,
    /// The toolchain's version as the workers report it (the most common one;
    /// null when no worker reported a version).
    pub version: Option<String>,
    /// Whether it has a compile step.
    pub compiled: bool,
    /// Active workers that run it.
    pub workers: u32,
    /// Free slots on those workers.
    pub slots_free: u32,
}

/// Languages with a compile step.
pub const COMPILED_LANGUAGES: &[&str] = &["c", "cpp", "java", "rust"];

/// Prefix of the worker labels that carry toolchain versions
/// (`lang.python=3.11.7`); the label `lang` lists the languages.
pub const LANG_VERSION_LABEL: &str = "lang.";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compare_forms() {
        let p = |s: &str| serde_json::from_str::<Compare>(s);
        assert_eq!(p("\"exact\"").unwrap(), Compare::Mode(CompareMode::Exact));
        assert_eq!(
            p("{\"float\": 1e-6}").unwrap(),
            Compare::Float { float: 1e-6 }
        );
        assert!(p("\"fuzzy\"").is_err());
        assert!(p("{\"float\": -1}").is_err());
        assert!(p("{\"float\": 1, \"x\": 2}").is_err());
        let i: CodeInput = serde_json::from_str("{\"language\":\"c\"}").unwrap();
        assert_eq!(i.compare, Compare::Default);
        for c in [
            Compare::Default,
            Compare::Float { float: 0.5 },
            Compare::Mode(CompareMode::Tokens),
        ] {
            let back: Compare = serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap();
            assert!(
                back == c || (c == Compare::Default && back == Compare::Mode(CompareMode::Trim))
            );
        }
    }

    #[test]
    fn output_shapes() {
        let single = CodeOutput {
            verdict: "accepted".into(),
            run: Some(RunFields {
                stdout: "hi".into(),
                ..RunFields::default()
            }),
            ..CodeOutput::default()
        };
        let v = serde_json::to_value(&single).unwrap();
        assert_eq!(v["stdout"], "hi");
        assert!(v.get("tests").is_none());
        assert!(v.get("stdout_truncated").is_none());
        let back: CodeOutput = serde_json::from_value(v).unwrap();
        assert_eq!(back.run.unwrap().stdout, "hi");
    }
}
