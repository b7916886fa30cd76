//! The memory allocator of every GoMark process: mimalloc, in place of the C library's malloc.
//!
//! Profiles of the distributed pipeline at 2,000 deal changes a second (`scale live`, the
//! services in one process) put 23 % of the process's CPU in glibc's malloc and free, most
//! of it in `_int_malloc`, `unlink_chunk` and `malloc_consolidate`: glibc searching and
//! merging its free lists. The allocations are spread over every library on the path
//! (prost, sqlx, hyper, async-nats, serde), so no one change of ours removes them.
//! mimalloc's per-thread pages make the same calls cheap, and it gives free pages back to
//! the system by itself, which glibc did only from the top of each arena (GoMark used to
//! call `malloc_trim` every 10 s for that).
//!
//! Two settings keep an idle process near its size on glibc (`scale footprint`, the shipped
//! build; glibc: embedded with the demo 49.5 MiB, the gateway 21.6 MiB):
//! - built with `no_thp`: otherwise mimalloc asks for transparent huge pages, and each
//!   touched 2 MiB page stays resident whole (an idle service took 34 MiB);
//! - [`configure`] purges freed pages at once, not a second later: the pages a burst freed
//!   (start-up, the demo's staging) were kept by threads that then slept (61.5 and 28.5
//!   MiB without it, 54.0 and 23.3 MiB with it; mimalloc v2 gave 65.3 and 30.9 MiB).
//!
//! Declared here, once, because every GoMark binary and test links this crate.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mimalloc.h`. The option indices are mimalloc's ABI (retired
/// options keep their slots), and libmimalloc-sys names only some of them.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator up for a long-running service; called first thing in every `main`.
#[allow(unsafe_code)]
pub fn configure() {
    // SAFETY: mi_option_set takes two integers and no pointer, and ignores an index out of
    // range. It stores one aligned word that threads already allocating may read meanwhile:
    // they see the old delay or the new one, so at worst a purge comes a second late.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        fn anon_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon");
            line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
        }
        super::configure();
        // Many small blocks, touched, then freed but for the last, which keeps its page (and
        // glibc's arena top) in use: glibc kept all of them resident until a `malloc_trim`.
        let mut blocks: Vec<Vec<u8>> = (0..8192).map(|_| vec![1u8; 4000]).collect();
        let keep = blocks.pop();
        let before = anon_kib();
        drop(blocks);
        let after = anon_kib();
        assert!(before.saturating_sub(after) >= 16 * 1024, "only {before} -> {after} KiB");
        drop(keep);
    }
}
