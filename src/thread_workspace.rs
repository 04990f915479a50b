//! The workspace a functional call (`conv2d`, `conv2d_backward`, and their
//! transposed and 1-D kin) borrows: one a thread and element type, kept
//! from one call to the next while it holds at most [`KEPT_BYTES`].
//!
//! A fresh workspace allocates and zero-fills its scratch buffers on
//! every call: on a small layer that costs as much as the arithmetic
//! (BENCHMARKS.md, "Functional calls"). A caller that wants the memory
//! back, or other options, passes its own [`Workspace`] to the
//! `_with_workspace` and `_into` functions.

use crate::workspace::Workspace;
use std::any::Any;
use std::cell::RefCell;

/// The most a kept workspace holds: a larger one (a large image's bands,
/// a backward pass's partial sums) is dropped after its call rather than
/// kept for the rest of the thread's life.
pub(crate) const KEPT_BYTES: usize = 16 << 20;

thread_local! {
    /// This thread's kept workspaces, one an element type.
    static KEPT: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `call` with this thread's kept workspace for `T` (a new one if
/// there is none, or if a call on this thread has it already: a call made
/// inside another's rayon join), then keeps the workspace if it is small
/// enough.
pub(crate) fn with_thread_workspace<T: 'static, R>(call: impl FnOnce(&mut Workspace<T>) -> R) -> R {
    let mut ws = take::<T>().unwrap_or_default();
    let result = call(&mut ws);
    if ws.allocated_bytes() <= KEPT_BYTES {
        keep(ws);
    }
    result
}

/// This thread's kept workspace for `T`, taken out.
fn take<T: 'static>() -> Option<Workspace<T>> {
    KEPT.with(|kept| {
        let mut kept = kept.try_borrow_mut().ok()?;
        let at = kept.iter().position(|ws| ws.is::<Workspace<T>>())?;
        kept.swap_remove(at).downcast().ok().map(|ws| *ws)
    })
}

/// Keeps `ws` for the next call on this thread, in place of any kept for
/// `T` already (a nested call's, which finished first).
fn keep<T: 'static>(ws: Workspace<T>) {
    KEPT.with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            kept.retain(|kept| !kept.is::<Workspace<T>>());
            kept.push(Box::new(ws));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call's workspace is the previous call's, per element type, and a
    /// call nested in another gets a workspace of its own.
    #[test]
    fn calls_on_a_thread_share_one_workspace_per_type() {
        std::thread::spawn(|| {
            let first = with_thread_workspace(|ws: &mut Workspace<f32>| {
                ws.set_test_buffer(1000);
                let nested =
                    with_thread_workspace(|inner: &mut Workspace<f32>| inner.allocated_bytes());
                assert_eq!(nested, 0, "the outer call holds the kept workspace");
                ws.allocated_bytes()
            });
            assert!(first >= 4000);
            let again = with_thread_workspace(|ws: &mut Workspace<f32>| ws.allocated_bytes());
            assert_eq!(again, first);
            let other = with_thread_workspace(|ws: &mut Workspace<f64>| ws.allocated_bytes());
            assert_eq!(other, 0, "each element type has its own");
        })
        .join()
        .unwrap();
    }

    /// A workspace that grew past [`KEPT_BYTES`] is not kept.
    #[test]
    fn large_workspaces_are_dropped() {
        std::thread::spawn(|| {
            with_thread_workspace(|ws: &mut Workspace<f64>| {
                ws.set_test_buffer(KEPT_BYTES / 8 + 1);
            });
            let next = with_thread_workspace(|ws: &mut Workspace<f64>| ws.allocated_bytes());
            assert_eq!(next, 0);
        })
        .join()
        .unwrap();
    }
}
