//! Reading a directory the way the kernel hands it out: one getdents64(2) call at a time.

/// The names one getdents64(2) call returns for an open directory (empty at its end).
pub fn getdents(dir: &std::fs::File, buf: &mut [u8]) -> Vec<String> {
    use std::os::fd::AsRawFd;
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
    let (mut names, mut at) = (Vec::new(), 0usize);
    while at < n as usize {
        // linux_dirent64: ino (8), off (8), reclen (2), type (1), name (NUL-terminated).
        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
        let name = &buf[at + 19..at + reclen];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        names.push(String::from_utf8_lossy(&name[..end]).into_owned());
        at += reclen;
    }
    names
}
