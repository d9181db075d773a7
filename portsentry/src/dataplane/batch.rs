//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+), which aya 0.14 does not
//! offer: many elements of a map in one `bpf(2)` call instead of one call each. Used to write a
//! fleet update's fresh bans and the bans restored at start (and their prefilter words), to
//! read the prefilter at once and the ban table's keys a chunk at a time.
//! Also `BPF_MAP_GET_NEXT_KEY` from a given key, which aya's key iterator cannot resume from
//! (the ban book's sweep walks the ban table in parts).
//!
//! Owns the only raw `bpf(2)` calls of the crate; the typed handles in `maps` decide what is
//! written. The kernel's element flags for batch updates may only be `BPF_F_LOCK`: a batch
//! update replaces existing entries (`BPF_ANY`), it cannot stop at one (`BPF_NOEXIST` is
//! EINVAL, checked on Linux 6.18).

use std::{io, os::fd::BorrowedFd};

use aya::Pod;

/// `enum bpf_cmd` (linux/bpf.h).
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// The kernel's `ENOTSUPP` (not in libc): a map type without batch operations.
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr` (linux/bpf.h), as the batch commands read it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Whether an error means "this kernel or map type has no batch operations" (fall back to one
/// element per call), rather than a failure of the elements.
pub(super) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP | libc::ENOSYS)
    )
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a live, writable `BatchAttr` laid out as the kernel's `batch` member and
    // its size is passed, so the kernel reads and writes only inside it (it zero-fills the rest
    // of its union). The pointers in it come from the slices of the callers below, which outlive
    // the call and hold `count` elements of the map's key and value sizes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `union bpf_attr` as BPF_MAP_GET_NEXT_KEY reads it (linux/bpf.h).
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// The key of map `fd` after `key` (the first with `None`); `None` after the last. `K` must be
/// the map's key type (see [`update`]).
pub(super) fn next_key<K: Pod + Default>(
    fd: BorrowedFd<'_>,
    key: Option<&K>,
) -> io::Result<Option<K>> {
    let mut next = K::default();
    let attr = NextKeyAttr {
        map_fd: fd_u32(fd),
        pad: 0,
        key: key.map_or(0, |k| std::ptr::from_ref(k) as u64),
        next_key: std::ptr::from_mut(&mut next) as u64,
        flags: 0,
    };
    // SAFETY: `attr` points at a live key (or none) and at `next`, both of the map's key size;
    // the kernel reads `key` and writes `next_key` only, and reads no more than the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_KEY,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<NextKeyAttr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(next));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(e)
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    use std::os::fd::AsRawFd;
    // A valid descriptor is never negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// Writes `keys[i] → values[i]` into the map `fd` in order, replacing existing entries. On an
/// error, `Err((written, error))`: the first `written` elements are in the map, the next one
/// failed (E2BIG: the map is full), the rest were not tried.
///
/// `K` and `V` must be the map's key and value types (their sizes are the map's: aya checked
/// them when the typed handle was opened, and the handles in `maps` are the only callers).
pub(super) fn update<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, io::Error)> {
    let n = keys.len().min(values.len());
    if n == 0 {
        return Ok(());
    }
    let count = u32::try_from(n).map_err(|_| (0, io::Error::from_raw_os_error(libc::E2BIG)))?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd_u32(fd),
        ..BatchAttr::default()
    };
    // The kernel writes back how many elements it wrote, also when one failed; an error before
    // the first element (EINVAL: a kernel without batch operations) leaves `count` as it was.
    bpf(BPF_MAP_UPDATE_BATCH, &mut attr).map_err(|e| {
        let written = if attr.count >= count {
            0
        } else {
            attr.count as usize
        };
        (written, e)
    })
}

/// Every key of the map `fd` (a hash), read `chunk` elements per call so that a million-entry
/// table needs no buffer of its size; the values are read too (the kernel's batch lookup has
/// no keys-only form) and dropped. `V` must be the map's value type (see [`update`]).
pub(super) fn lookup_keys<K: Pod + Default, V: Pod + Default>(
    fd: BorrowedFd<'_>,
    chunk: usize,
) -> io::Result<Vec<K>> {
    let chunk = chunk.max(1);
    let mut out = Vec::new();
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk];
    // Where the previous call stopped (a hash bucket: 4 bytes).
    let mut token = [0u64; 2];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_mut_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd: fd_u32(fd),
            ..BatchAttr::default()
        };
        first = false;
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let read = (attr.count as usize).min(chunk);
        match result {
            Ok(()) => out.extend_from_slice(&keys[..read]),
            // The end of the map; `count` says how many this last call read.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                out.extend_from_slice(&keys[..read]);
                return Ok(out);
            }
            Err(e) => return Err(e),
        }
        if read == 0 {
            return Ok(out);
        }
    }
}

/// Reads every element of the map `fd` (an array or a hash; `keys` and `values` sized to its
/// capacity); returns how many were read.
pub(super) fn lookup_all<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    keys: &mut [K],
    values: &mut [V],
) -> io::Result<usize> {
    let n = keys.len().min(values.len());
    let mut read = 0;
    // Where the previous call stopped: a key of an array, a bucket of a hash (4 bytes each).
    let mut token = [0u64; 2];
    let mut first = true;
    while read < n {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_mut_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys[read..].as_mut_ptr() as u64,
            values: values[read..].as_mut_ptr() as u64,
            count: u32::try_from(n - read).unwrap_or(u32::MAX),
            map_fd: fd_u32(fd),
            ..BatchAttr::default()
        };
        first = false;
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        match result {
            Ok(()) => read += (attr.count as usize).min(n - read),
            // The end of the map; `count` says how many this last call read.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                read += (attr.count as usize).min(n - read);
                break;
            }
            Err(e) => return Err(e),
        }
        if attr.count == 0 {
            break;
        }
    }
    Ok(read)
}
