//! A bump arena in front of the rule's allocator (feature `arena`, on by default).
//!
//! An evaluation allocates dozens of small, short-lived blocks: the request's strings as the
//! host lowers them, parsed facts, the reasons and output it returns. A general allocator
//! (dlmalloc, talc) spends more on bookkeeping for them than the rule spends deciding:
//! profiled on the payments bundle in a reused instance, allocation was a third of the time
//! spent in the guest. Here an allocation is a pointer bump inside a fixed region of
//! static memory, and freeing the last block moves the pointer back.
//!
//! When every block of the arena has been freed (an evaluation's request and result are, once
//! the host has read the result), the arena starts over. A block that outlives its
//! evaluation (a cache kept in a `static`) keeps the arena from starting over: that is safe,
//! but later allocations then go to the general allocator once the arena is full. Make such
//! blocks inside [`persistent`](crate::persistent), as the SDK does for `init` and parsed
//! settings. A request larger than what is left also goes to the general allocator.
//!
//! Only for single-threaded Wasm: the state is plain cells.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};

/// A bump arena of `N` bytes in front of `F`.
#[repr(C, align(16))]
pub struct Arena<F, const N: usize> {
    mem: UnsafeCell<[u8; N]>,
    /// Offset of the first free byte.
    next: Cell<usize>,
    /// Blocks in the arena not freed yet.
    live: Cell<usize>,
    /// Above zero: allocations bypass the arena (state meant to outlive the evaluation).
    bypass: Cell<u32>,
    fallback: F,
}

// SAFETY: only installed as the allocator of single-threaded Wasm, where nothing runs
// concurrently with an allocation.
#[cfg(target_arch = "wasm32")]
unsafe impl<F: Sync, const N: usize> Sync for Arena<F, N> {}

impl<F, const N: usize> Arena<F, N> {
    /// An empty arena in front of `fallback`.
    pub const fn new(fallback: F) -> Self {
        Arena {
            mem: UnsafeCell::new([0; N]),
            next: Cell::new(0),
            live: Cell::new(0),
            bypass: Cell::new(0),
            fallback,
        }
    }

    fn base(&self) -> usize {
        self.mem.get() as usize
    }

    pub(crate) fn contains(&self, ptr: *mut u8) -> bool {
        let addr = ptr as usize;
        addr >= self.base() && addr < self.base() + N
    }

    /// Runs `f` with every allocation going to the general allocator: for state that outlives
    /// the evaluation, which would otherwise keep the arena from starting over.
    pub fn persistent<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Cell<u32>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        self.bypass.set(self.bypass.get() + 1);
        let _restore = Restore(&self.bypass);
        f()
    }

    /// The bump: a block in the arena, or null when it does not fit.
    fn bump(&self, layout: Layout) -> *mut u8 {
        if self.bypass.get() > 0 {
            return core::ptr::null_mut();
        }
        let base = self.base();
        let Some(start) = (base + self.next.get()).checked_next_multiple_of(layout.align()) else {
            return core::ptr::null_mut();
        };
        match start.checked_add(layout.size()) {
            Some(end) if end <= base + N => {
                self.next.set(end - base);
                self.live.set(self.live.get() + 1);
                // Derived from the region's pointer, so the block keeps its provenance.
                self.mem.get().cast::<u8>().wrapping_add(start - base)
            }
            _ => core::ptr::null_mut(),
        }
    }
}

// SAFETY: a block handed out is `layout.size()` bytes at `layout.align()` inside the region
// (or the fallback's), and is handed out again only after it was freed: the region is reused
// from the start only when no block in it is live, and the top is moved back only over the
// block being freed.
unsafe impl<F: GlobalAlloc, const N: usize> GlobalAlloc for Arena<F, N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = self.bump(layout);
        if ptr.is_null() {
            // SAFETY: the caller's layout, passed on.
            unsafe { self.fallback.alloc(layout) }
        } else {
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.contains(ptr) {
            // SAFETY: not the arena's, so the fallback's, with the layout it was given.
            return unsafe { self.fallback.dealloc(ptr, layout) };
        }
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            self.next.set(0);
        } else if ptr as usize + layout.size() == self.base() + self.next.get() {
            // The last block: its bytes are free again.
            self.next.set(ptr as usize - self.base());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.contains(ptr) {
            // SAFETY: the fallback's block, passed on.
            return unsafe { self.fallback.realloc(ptr, layout, new_size) };
        }
        let (addr, base) = (ptr as usize, self.base());
        // The last block grows or shrinks in place while it fits.
        if addr + layout.size() == base + self.next.get()
            && addr
                .checked_add(new_size)
                .is_some_and(|end| end <= base + N)
        {
            self.next.set(addr + new_size - base);
            return ptr;
        }
        // SAFETY: `realloc`'s contract: `new_size`, at the old alignment, is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout (above).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct, each at least this long.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Bytes of the arena: an evaluation's short-lived blocks with room to spare; what does not
/// fit goes to the general allocator.
#[cfg(all(target_arch = "wasm32", feature = "arena"))]
const ARENA_BYTES: usize = 32 << 10;

/// The general allocator behind the arena: the lean build's own (talc), or the target's.
#[cfg(all(
    target_arch = "wasm32",
    feature = "arena",
    not(target_os = "wasi"),
    feature = "lean-allocator"
))]
use crate::lean::{Lean as General, lean as general};
#[cfg(all(
    target_arch = "wasm32",
    feature = "arena",
    not(all(not(target_os = "wasi"), feature = "lean-allocator"))
))]
type General = std::alloc::System;
#[cfg(all(
    target_arch = "wasm32",
    feature = "arena",
    not(all(not(target_os = "wasi"), feature = "lean-allocator"))
))]
const fn general() -> General {
    std::alloc::System
}

#[cfg(all(target_arch = "wasm32", feature = "arena"))]
#[global_allocator]
pub(crate) static ALLOCATOR: Arena<General, ARENA_BYTES> = Arena::new(general());

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn bumps_pops_the_last_block_and_starts_over_when_empty() {
        let arena = Box::new(Arena::<System, 256>::new(System));
        unsafe {
            let a = arena.alloc(layout(10, 1));
            let b = arena.alloc(layout(8, 8));
            assert!(arena.contains(a) && arena.contains(b));
            assert_eq!(b as usize % 8, 0, "aligned");
            assert!(b as usize >= a as usize + 10, "no overlap");
            // Freeing the last block gives its bytes back.
            arena.dealloc(b, layout(8, 8));
            let c = arena.alloc(layout(8, 8));
            assert_eq!(c, b);
            // Freeing a block that is not the last only counts it.
            arena.dealloc(a, layout(10, 1));
            assert_eq!(arena.live.get(), 1);
            let d = arena.alloc(layout(4, 4));
            assert!(d as usize >= c as usize + 8, "not over the live block");
            arena.dealloc(c, layout(8, 8));
            arena.dealloc(d, layout(4, 4));
            // Everything freed: the next block starts at the beginning again.
            assert_eq!((arena.live.get(), arena.next.get()), (0, 0));
            assert_eq!(arena.alloc(layout(1, 1)), a);
        }
    }

    #[test]
    fn what_does_not_fit_or_is_persistent_goes_to_the_fallback() {
        let arena = Box::new(Arena::<System, 64>::new(System));
        unsafe {
            let big = arena.alloc(layout(100, 1));
            assert!(!big.is_null() && !arena.contains(big));
            let kept = arena.persistent(|| arena.alloc(layout(8, 8)));
            assert!(!arena.contains(kept));
            let small = arena.alloc(layout(60, 1));
            assert!(arena.contains(small));
            let over = arena.alloc(layout(8, 1));
            assert!(!arena.contains(over), "the arena is full");
            arena.dealloc(big, layout(100, 1));
            arena.dealloc(kept, layout(8, 8));
            arena.dealloc(over, layout(8, 1));
            arena.dealloc(small, layout(60, 1));
            assert_eq!((arena.live.get(), arena.next.get()), (0, 0));
        }
        // A panic inside `persistent` does not leave the arena bypassed.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            arena.persistent(|| panic!("in init"))
        }));
        assert!(caught.is_err());
        assert_eq!(arena.bypass.get(), 0);
    }

    #[test]
    fn realloc_grows_the_last_block_in_place_and_moves_the_others() {
        let arena = Box::new(Arena::<System, 128>::new(System));
        unsafe {
            let a = arena.alloc(layout(4, 1));
            a.copy_from_nonoverlapping(b"abcd".as_ptr(), 4);
            let grown = arena.realloc(a, layout(4, 1), 16);
            assert_eq!(grown, a, "the last block grows in place");
            let b = arena.alloc(layout(4, 1));
            let moved = arena.realloc(a, layout(16, 1), 32);
            assert_ne!(moved, a);
            assert!(arena.contains(moved));
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"abcd");
            // Too big for what is left: to the fallback, contents kept.
            let out = arena.realloc(moved, layout(32, 1), 1000);
            assert!(!arena.contains(out));
            assert_eq!(std::slice::from_raw_parts(out, 4), b"abcd");
            arena.dealloc(out, layout(1000, 1));
            arena.dealloc(b, layout(4, 1));
            assert_eq!((arena.live.get(), arena.next.get()), (0, 0));
        }
    }

    /// Many blocks of mixed sizes, freed in a scrambled order, against a model: no two live
    /// blocks overlap and every block keeps what was written to it.
    #[test]
    fn live_blocks_never_overlap_and_keep_their_contents() {
        let arena = Box::new(Arena::<System, 4096>::new(System));
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for step in 0..20_000u32 {
            unsafe {
                if live.is_empty() || rand(3) > 0 && live.len() < 64 {
                    let l = layout(1 + rand(200), 1 << rand(5));
                    let p = if rand(4) == 0 {
                        // Grow a block instead, when there is one.
                        match live.pop() {
                            Some((old, old_l, fill)) => {
                                let p = arena.realloc(old, old_l, l.size());
                                let kept = old_l.size().min(l.size());
                                assert!(
                                    std::slice::from_raw_parts(p, kept)
                                        .iter()
                                        .all(|&b| b == fill),
                                    "realloc lost the contents"
                                );
                                let new_l = layout(l.size(), old_l.align());
                                assert_eq!(p as usize % new_l.align(), 0);
                                p.write_bytes(fill, new_l.size());
                                live.push((p, new_l, fill));
                                continue;
                            }
                            None => arena.alloc(l),
                        }
                    } else {
                        arena.alloc(l)
                    };
                    assert_eq!(p as usize % l.align(), 0);
                    let fill = (step % 251) as u8;
                    p.write_bytes(fill, l.size());
                    live.push((p, l, fill));
                } else {
                    let (p, l, fill) = live.swap_remove(rand(live.len()));
                    assert!(
                        std::slice::from_raw_parts(p, l.size())
                            .iter()
                            .all(|&b| b == fill)
                    );
                    arena.dealloc(p, l);
                }
            }
        }
        for (p, l, fill) in live.drain(..) {
            unsafe {
                assert!(
                    std::slice::from_raw_parts(p, l.size())
                        .iter()
                        .all(|&b| b == fill)
                );
                arena.dealloc(p, l);
            }
        }
        assert_eq!((arena.live.get(), arena.next.get()), (0, 0));
    }
}
