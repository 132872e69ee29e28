//! The few POSIX calls std does not wrap. All of this crate's `unsafe` lives here, each call
//! with the reason it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Sends `signal` to every process in group `pgid`. A group that no longer exists is not an
/// error: the caller wanted it gone.
pub(crate) fn signal_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid).map_err(io::Error::other)?;
    // SAFETY: killpg takes plain integers and touches no memory of ours.
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(error)
    }
}

/// Whether child `pid` has exited, *without* reaping it (`WNOWAIT`): while it stays a zombie its
/// pid, and so its process-group id, cannot be reused, so the group can still be signalled
/// safely. A pid that is not (or no longer) our child counts as exited.
pub(crate) fn has_exited(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain old data for which all-zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t that outlives the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return true;
    }
    // With WNOHANG, si_pid stays 0 while the child is still running.
    // SAFETY: waitid filled `info` for a child-state change, for which si_pid is the valid field.
    unsafe { info.si_pid() != 0 }
}

/// Registers `hook` to run when the process exits normally (return from `main`,
/// `std::process::exit`), which is how test harnesses and demos end.
pub(crate) fn at_exit(hook: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `hook` is a plain function that lives as long as the program.
    if unsafe { libc::atexit(hook) } == 0 {
        Ok(())
    } else {
        Err(io::Error::other("atexit refused the hook"))
    }
}

/// Makes the child of `cmd` the leader of a new session, detached from our process group and
/// controlling terminal, so that nothing aimed at us (a terminal's Ctrl-C included) reaches it.
pub(crate) fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only setsid, which is
    // async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
