//! A small seccomp-BPF deny list, installed last before `execve`.
//!
//! It refuses the system calls a judged program never needs and that widen
//! the kernel's attack surface: namespaces (`unshare`, `setns`, namespace
//! flags of `clone`; `clone3` answers ENOSYS so libc falls back to `clone`),
//! mounting, `ptrace`, keyrings, BPF, perf, userfaultfd, io_uring, module
//! and kexec calls, and sockets other than Unix/IPv4/IPv6 (no netlink or
//! packet sockets). Other architectures' system call numbers are refused.

/// What [`install`] does on this build, for the check report.
pub fn describe() -> String {
    if cfg!(target_arch = "x86_64") {
        "deny list: namespaces, mount, ptrace, keyrings, bpf, perf, userfaultfd, io_uring, \
         modules/kexec, non-IP/Unix sockets; x32/i386 syscalls refused"
            .into()
    } else {
        "not applied: the filter is only written for x86_64".into()
    }
}

#[cfg(target_arch = "x86_64")]
/// Install the filter in the calling thread (needs `no_new_privs` or root).
pub fn install() -> Result<(), ()> {
    use libc::sock_filter;
    const LD_W_ABS: u16 = 0x20;
    const JEQ: u16 = 0x15;
    const JGE: u16 = 0x35;
    const JSET: u16 = 0x45;
    const RET: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const OFF_NR: u32 = 0;
    const OFF_ARCH: u32 = 4;
    const OFF_ARG0: u32 = 16;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & 0xffff);
    let ns_flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP) as u32;

    let mut f = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        // x32 ABI numbers.
        jump(JGE, 0x4000_0000, 0, 1),
        stmt(RET, errno(libc::EPERM)),
    ];
    let denied: &[(libc::c_long, i32)] = &[
        (libc::SYS_ptrace, libc::EPERM),
        (libc::SYS_mount, libc::EPERM),
        (libc::SYS_umount2, libc::EPERM),
        (libc::SYS_pivot_root, libc::EPERM),
        (libc::SYS_chroot, libc::EPERM),
        (libc::SYS_unshare, libc::EPERM),
        (libc::SYS_setns, libc::EPERM),
        (libc::SYS_keyctl, libc::EPERM),
        (libc::SYS_add_key, libc::EPERM),
        (libc::SYS_request_key, libc::EPERM),
        (libc::SYS_bpf, libc::EPERM),
        (libc::SYS_perf_event_open, libc::EPERM),
        (libc::SYS_userfaultfd, libc::EPERM),
        (libc::SYS_io_uring_setup, libc::ENOSYS),
        (libc::SYS_io_uring_enter, libc::ENOSYS),
        (libc::SYS_io_uring_register, libc::ENOSYS),
        (libc::SYS_kexec_load, libc::EPERM),
        (libc::SYS_kexec_file_load, libc::EPERM),
        (libc::SYS_init_module, libc::EPERM),
        (libc::SYS_finit_module, libc::EPERM),
        (libc::SYS_delete_module, libc::EPERM),
        (libc::SYS_reboot, libc::EPERM),
        (libc::SYS_swapon, libc::EPERM),
        (libc::SYS_swapoff, libc::EPERM),
        (libc::SYS_acct, libc::EPERM),
        (libc::SYS_iopl, libc::EPERM),
        (libc::SYS_ioperm, libc::EPERM),
        (libc::SYS_open_by_handle_at, libc::EPERM),
        (libc::SYS_name_to_handle_at, libc::EPERM),
        (libc::SYS_process_vm_readv, libc::EPERM),
        (libc::SYS_process_vm_writev, libc::EPERM),
        (libc::SYS_syslog, libc::EPERM),
        (libc::SYS_quotactl, libc::EPERM),
        (libc::SYS_fsopen, libc::EPERM),
        (libc::SYS_fsmount, libc::EPERM),
        (libc::SYS_fsconfig, libc::EPERM),
        (libc::SYS_fspick, libc::EPERM),
        (libc::SYS_move_mount, libc::EPERM),
        (libc::SYS_open_tree, libc::EPERM),
        (libc::SYS_mount_setattr, libc::EPERM),
        (libc::SYS_clone3, libc::ENOSYS),
    ];
    for &(nr, e) in denied {
        f.push(jump(JEQ, nr as u32, 0, 1));
        f.push(stmt(RET, errno(e)));
    }
    // clone with namespace flags.
    f.push(jump(JEQ, libc::SYS_clone as u32, 0, 3));
    f.push(stmt(LD_W_ABS, OFF_ARG0));
    f.push(jump(JSET, ns_flags, 0, 1));
    f.push(stmt(RET, errno(libc::EPERM)));
    f.push(stmt(LD_W_ABS, OFF_NR));
    // socket: Unix, IPv4, IPv6 only.
    f.push(jump(JEQ, libc::SYS_socket as u32, 0, 5));
    f.push(stmt(LD_W_ABS, OFF_ARG0));
    f.push(jump(JEQ, libc::AF_UNIX as u32, 3, 0));
    f.push(jump(JEQ, libc::AF_INET as u32, 2, 0));
    f.push(jump(JEQ, libc::AF_INET6 as u32, 1, 0));
    f.push(stmt(RET, errno(libc::EAFNOSUPPORT)));
    f.push(stmt(LD_W_ABS, OFF_NR));
    f.push(stmt(RET, libc::SECCOMP_RET_ALLOW));

    let prog = libc::sock_fprog {
        len: f.len() as u16,
        filter: f.as_mut_ptr(),
    };
    // SAFETY: prog points at a valid filter that lives across the call.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == 0 { Ok(()) } else { Err(()) }
}

#[cfg(not(target_arch = "x86_64"))]
/// No filter on this architecture (see [`describe`]).
pub fn install() -> Result<(), ()> {
    Ok(())
}
