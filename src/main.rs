fn main() {
    // The sandbox helper: `brigade sandbox-exec` (internal; config on fd 3).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "sandbox-exec")
    {
        std::process::exit(brigade_worker::sandbox::helper_main());
    }
}
