//! Built-in task kinds: `noop`, `echo`, `sleep`, `fail`, `flaky`, `exec`.

pub mod basic;
pub mod exec;

use crate::Registry;

/// A registry with the built-in kinds; `exec` only when `allow_exec`.
pub fn builtins(allow_exec: bool) -> Registry {
    let mut r = Registry::new();
    basic::register(&mut r);
    if allow_exec {
        r.register("exec", exec::Exec);
    }
    r
}
