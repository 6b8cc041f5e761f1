//! The read buffers of whole-file responses: chunk-sized buffers that finished frames
//! return and the next reads reuse. Plain data behind a lock; the shared state holds
//! one pool and the HTTP file body uses it.

use std::sync::Mutex;

/// Bytes read and handed to hyper per frame: large enough that a 40 MB initrd costs a
/// few hundred reads, small enough that hundreds of concurrent downloads stay within a
/// few tens of MB of buffers.
pub const CHUNK: usize = 128 * 1024;

/// Most idle chunk buffers kept for reuse (8 MiB).
const POOL_MAX: usize = 64;

/// Chunk buffers returned by finished frames, reused by the next reads: no allocation,
/// zeroing or page faults per chunk in steady state.
#[derive(Debug, Default)]
pub struct ChunkPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    /// A buffer of [`CHUNK`] bytes, reused when one is free.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0u8; CHUNK])
    }

    /// How many buffers are idle, waiting for reuse.
    pub fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Gives a buffer back for reuse; kept only while fewer than the cap are idle.
    pub fn put(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < POOL_MAX && buf.len() == CHUNK {
            free.push(buf);
        }
    }
}
