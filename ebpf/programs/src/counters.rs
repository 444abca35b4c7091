//! The per-CPU `COUNTERS` that `meshaccel status` and /metrics sum.
use meshaccel_common::Counter;

use crate::maps::COUNTERS;

#[inline(always)]
pub(crate) fn count(c: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += n };
    }
}
