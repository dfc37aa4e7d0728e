//! The allocator of a lean rule: one built for `wasm32-unknown-unknown`, which imports
//! nothing but `rulebox:rule`.
//!
//! Rust's default allocator on that target (dlmalloc) takes every heap it uses from
//! `memory.grow`, even while the memory the module starts with is unused. In a host that
//! starts each evaluation in a fresh instance, that grow is paid on every evaluation, and a
//! grow is a page-protection change the host's kernel must announce to every core. This
//! allocator (talc) first hands out the memory between the end of the stack and data
//! (`__heap_base`) and the end of the initial memory, and grows only when that is used up.
//! Build lean rules with an initial memory that holds a typical evaluation
//! (`plugins/build.sh` links them with 128 KiB).

use core::alloc::Layout;
use core::ptr::NonNull;
use talc::base::Talc;
use talc::base::binning::Binning;
use talc::cell::TalcSyncCell;
use talc::wasm::WasmBinning;

const PAGE: usize = 64 << 10;

unsafe extern "C" {
    /// Set by the linker: the first byte after the stack and static data.
    static __heap_base: u8;
}

/// Claims the initial memory's free tail first, then grows memory as needed, extending the
/// same heap while it stays contiguous.
#[derive(Debug)]
pub struct InitialThenGrow {
    /// The end of the heap claimed so far; `None` before the first claim.
    end: Option<NonNull<u8>>,
    claimed_initial: bool,
}

unsafe impl talc::source::Source for InitialThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.claimed_initial {
            talc.source.claimed_initial = true;
            let base = (&raw const __heap_base) as usize;
            let end = core::arch::wasm32::memory_size::<0>() * PAGE;
            if end > base {
                // SAFETY: [base, end) is memory the module owns and nothing else uses: the
                // linker put the stack and static data below `__heap_base`.
                talc.source.end = unsafe { talc.claim(base as *mut u8, end - base) };
                if talc.source.end.is_some() {
                    return Ok(());
                }
            }
        }
        // Enough pages for the allocation and, should the pages not follow the heap, a new
        // heap's bookkeeping (talc's own minimum), rounded up.
        let needed = layout.size() + layout.align() + talc::min_first_heap_size::<B>();
        let pages = needed.div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow::<0>(pages);
        if previous == usize::MAX {
            return Err(());
        }
        let grown = (previous * PAGE) as *mut u8;
        let grown_end = grown.wrapping_add(pages * PAGE);
        if let Some(end) = talc.source.end.take()
            && end.as_ptr() == grown
        {
            // SAFETY: the grown pages follow the heap directly and are ours.
            talc.source.end = Some(unsafe { talc.extend(end, grown_end) });
            return Ok(());
        }
        // SAFETY: freshly grown pages, owned by nobody else.
        talc.source.end = unsafe { talc.claim(grown, pages * PAGE) };
        talc.source.end.map(|_| ()).ok_or(())
    }
}

/// talc over [`InitialThenGrow`]: the lean build's general allocator.
pub(crate) type Lean = TalcSyncCell<InitialThenGrow, WasmBinning>;

/// A [`Lean`] allocator that has claimed nothing yet.
pub(crate) const fn lean() -> Lean {
    TalcSyncCell::new_wasm(InitialThenGrow {
        end: None,
        claimed_initial: false,
    })
}

#[cfg(not(feature = "arena"))]
#[global_allocator]
static ALLOCATOR: Lean = lean();
