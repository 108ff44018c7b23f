//! In-memory ports for tests of the gateway loop: a test pushes frames in through a
//! [`MemoryHandle`], the loop receives them from the [`MemoryPort`], and whatever the loop
//! transmits (and flushes) is collected for the test to inspect.
//!
//! [`Port::fd`] returns `-1` (there is no kernel object behind the port): a loop driving memory
//! ports must rely on the `rx` timeout, which this port honours by waiting on a condition variable
//! that [`MemoryHandle::push`] signals.

use super::{FrameInfo, Port};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Queues {
    rx: VecDeque<(Vec<u8>, FrameInfo)>,
    tx: Vec<(Vec<u8>, FrameInfo)>,
    flushes: usize,
}

#[derive(Default)]
struct Shared {
    q: Mutex<Queues>,
    ready: Condvar,
}

/// The port side, handed to the gateway loop.
pub struct MemoryPort {
    shared: Arc<Shared>,
    pending: Vec<(Vec<u8>, FrameInfo)>,
    batch: usize,
}

/// The test side: injects frames and collects transmitted ones.
#[derive(Clone)]
pub struct MemoryHandle {
    shared: Arc<Shared>,
}

/// A connected port and handle; `batch` bounds the frames one `rx` call returns.
pub fn memory_port(batch: usize) -> (MemoryPort, MemoryHandle) {
    let shared = Arc::new(Shared::default());
    (
        MemoryPort {
            shared: shared.clone(),
            pending: Vec::new(),
            batch: batch.max(1),
        },
        MemoryHandle { shared },
    )
}

impl MemoryHandle {
    /// Queues a frame for the port to receive.
    pub fn push(&self, frame: &[u8], info: FrameInfo) {
        self.shared.q.lock().rx.push_back((frame.to_vec(), info));
        self.shared.ready.notify_all();
    }
    /// Takes everything the port has transmitted (flushed) so far.
    pub fn take_tx(&self) -> Vec<(Vec<u8>, FrameInfo)> {
        std::mem::take(&mut self.shared.q.lock().tx)
    }
    /// Frames pushed but not yet received by the port.
    pub fn rx_pending(&self) -> usize {
        self.shared.q.lock().rx.len()
    }
    /// How many times the port flushed.
    pub fn flushes(&self) -> usize {
        self.shared.q.lock().flushes
    }
    /// Waits until at least `n` frames were transmitted or `timeout` passed; returns the count.
    pub fn wait_tx(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.q.lock();
        while q.tx.len() < n {
            if self.shared.ready.wait_until(&mut q, deadline).timed_out() {
                break;
            }
        }
        q.tx.len()
    }
}

impl Port for MemoryPort {
    fn fd(&self) -> RawFd {
        -1
    }

    fn rx(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&mut [u8], &FrameInfo),
    ) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut batch = Vec::new();
        {
            let mut q = self.shared.q.lock();
            while q.rx.is_empty() {
                if self.shared.ready.wait_until(&mut q, deadline).timed_out() {
                    break;
                }
            }
            while batch.len() < self.batch {
                match q.rx.pop_front() {
                    Some(x) => batch.push(x),
                    None => break,
                }
            }
        }
        let n = batch.len();
        for (mut frame, info) in batch {
            f(&mut frame, &info);
        }
        Ok(n)
    }

    fn tx(&mut self, frame: &[u8], info: &FrameInfo) -> io::Result<()> {
        self.pending.push((frame.to_vec(), *info));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut q = self.shared.q.lock();
        q.tx.append(&mut self.pending);
        q.flushes += 1;
        drop(q);
        self.shared.ready.notify_all();
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_in_and_come_out() {
        let (mut port, h) = memory_port(2);
        let info = FrameInfo {
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        h.push(&[1, 2, 3], info);
        h.push(&[4], FrameInfo::default());
        h.push(&[5], FrameInfo::default());
        let mut seen = Vec::new();
        let n = port
            .rx(Duration::from_millis(10), &mut |f, i| {
                f[0] += 10;
                seen.push((f.to_vec(), *i));
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen[0], (vec![11, 2, 3], info));
        assert_eq!(h.rx_pending(), 1);
        port.tx(&seen[0].0, &seen[0].1).unwrap();
        assert!(h.take_tx().is_empty(), "nothing before flush");
        port.flush().unwrap();
        assert_eq!(h.wait_tx(1, Duration::from_millis(10)), 1);
        assert_eq!(h.take_tx(), vec![(vec![11, 2, 3], info)]);
        assert_eq!(h.flushes(), 1);
        // the last frame, then an empty wait that is bounded by the timeout
        assert_eq!(port.rx(Duration::ZERO, &mut |_, _| {}).unwrap(), 1);
        let t = Instant::now();
        assert_eq!(
            port.rx(Duration::from_millis(20), &mut |_, _| {}).unwrap(),
            0
        );
        assert!(t.elapsed() >= Duration::from_millis(15));
    }
}
