//! Deterministic byte streams: sender and receiver derive the same bytes from a seed, so the
//! receiver checks every byte and its position without the sender shipping checksums.

/// Random streams are built from 64 KiB chunks, each a different rotation of one random
/// block with its index stamped on its first 8 bytes: generation and checking are memcpy and
/// memcmp (fast even in debug builds), and a lost, repeated or reordered chunk never matches.
const CHUNK: usize = 64 * 1024;

pub enum Stream {
    /// Pseudo-random bytes.
    Random { seed: u64, block: Vec<u8> },
    /// One 8-byte little-endian tag, repeated: for telling connections apart.
    Tag(u64),
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Stream {
    pub fn random(seed: u64) -> Self {
        // Twice the chunk size, so every rotation is one contiguous slice.
        let block = (0..2 * CHUNK as u64 / 8).flat_map(|i| splitmix64(seed ^ (i << 20)).to_le_bytes()).collect();
        Stream::Random { seed, block }
    }

    /// Fills `buf` with the stream's bytes at `offset..offset + buf.len()`.
    pub fn fill(&self, mut offset: u64, buf: &mut [u8]) {
        match self {
            Stream::Tag(tag) => {
                let t = tag.to_le_bytes();
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = t[(offset as usize + i) % 8];
                }
            }
            Stream::Random { seed, block } => {
                let mut done = 0;
                while done < buf.len() {
                    let chunk = offset / CHUNK as u64;
                    let within = (offset % CHUNK as u64) as usize;
                    let n = (CHUNK - within).min(buf.len() - done);
                    let rot = (splitmix64(seed.wrapping_add(chunk)) % CHUNK as u64) as usize;
                    let out = &mut buf[done..done + n];
                    out.copy_from_slice(&block[rot + within..rot + within + n]);
                    for (i, b) in out.iter_mut().enumerate().take(8usize.saturating_sub(within)) {
                        *b ^= chunk.to_le_bytes()[within + i];
                    }
                    done += n;
                    offset += n as u64;
                }
            }
        }
    }

    /// The position of the first byte of `data` that is not the stream's byte at
    /// `offset + i`. `scratch` is reused between calls.
    pub fn first_mismatch(&self, offset: u64, data: &[u8], scratch: &mut Vec<u8>) -> Option<u64> {
        scratch.resize(data.len(), 0);
        self.fill(offset, scratch);
        if scratch[..] == *data {
            return None;
        }
        let i = scratch.iter().zip(data).position(|(a, b)| a != b).unwrap();
        Some(offset + i as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_independent_of_how_the_stream_is_split() {
        for s in [Stream::random(7), Stream::Tag(0x0102_0304_0506_0708)] {
            let mut whole = vec![0; 3 * CHUNK + 100];
            s.fill(0, &mut whole);
            let mut pieces = vec![0; whole.len()];
            let mut off = 0;
            for n in [1, 7, CHUNK - 8, 3, CHUNK + 5].iter().cycle() {
                let end = (off + n).min(whole.len());
                s.fill(off as u64, &mut pieces[off..end]);
                off = end;
                if off == whole.len() {
                    break;
                }
            }
            assert!(whole == pieces);
            assert_eq!(s.first_mismatch(5, &whole[5..100], &mut vec![]), None);
        }
    }

    #[test]
    fn reordered_chunks_and_other_seeds_are_detected() {
        let s = Stream::random(1);
        let mut a = vec![0; 2 * CHUNK];
        s.fill(0, &mut a);
        let mut swapped = a[CHUNK..].to_vec();
        swapped.extend_from_slice(&a[..CHUNK]);
        assert_eq!(s.first_mismatch(0, &swapped, &mut vec![]), Some(0));
        let mut other = vec![0; 64];
        Stream::random(2).fill(0, &mut other);
        assert!(s.first_mismatch(0, &other, &mut vec![]).is_some());
    }
}
