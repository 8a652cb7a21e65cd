//! Built-in task kinds: `noop`, `echo`, `sleep`, `fail`, `flaky`, `flow`, `exec`, `code`.

pub mod basic;
pub mod code;
pub mod exec;
pub mod flow;
pub mod judge;

use crate::Registry;

/// A registry with the built-in kinds; `exec` only when `allow_exec`.
/// `code` is added by the caller (it needs the sandbox helper's path).
pub fn builtins(allow_exec: bool) -> Registry {
    let mut r = Registry::new();
    basic::register(&mut r);
    flow::register(&mut r);
    if allow_exec {
        r.register("exec", exec::Exec);
    }
    r
}
