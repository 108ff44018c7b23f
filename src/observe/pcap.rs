//! `--pcap DIR`: what enters and leaves each interface, as classic pcap files for Wireshark.
//!
//! Each datapath worker writes its own files (`DIR/<interface>-w<N>.pcap`), so capturing adds no
//! lock shared between workers; the writes are buffered. Frames are recorded as they cross the
//! interface: received frames before translation, sent frames after it, GSO super-frames as one
//! large frame (as `tcpdump` on the host would show them). This is a debugging aid: it costs a
//! copy and a clock read per frame.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Link type of the files: Ethernet.
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 262_144;

/// One pcap file being written.
pub struct PcapWriter {
    out: BufWriter<File>,
}

impl PcapWriter {
    /// Creates `path` and writes the pcap global header.
    pub fn create(path: &Path) -> io::Result<PcapWriter> {
        let mut out = BufWriter::with_capacity(256 * 1024, File::create(path)?);
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&SNAPLEN.to_le_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(PcapWriter { out })
    }

    /// Appends one frame with the current time.
    pub fn record(&mut self, frame: &[u8]) -> io::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let caplen = frame.len().min(SNAPLEN as usize);
        self.out.write_all(&(now.as_secs() as u32).to_le_bytes())?;
        self.out.write_all(&now.subsec_micros().to_le_bytes())?;
        self.out.write_all(&(caplen as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&frame[..caplen])
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for PcapWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_readable_pcap() {
        let dir = std::env::temp_dir().join(format!("rnat-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        {
            let mut w = PcapWriter::create(&path).unwrap();
            w.record(&[0xaa; 60]).unwrap();
            w.record(&[0xbb; 1514]).unwrap();
        }
        let b = std::fs::read(&path).unwrap();
        assert_eq!(&b[0..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(b[20..24].try_into().unwrap()),
            1,
            "Ethernet"
        );
        assert_eq!(b.len(), 24 + 16 + 60 + 16 + 1514);
        assert_eq!(
            u32::from_le_bytes(b[24 + 8..24 + 12].try_into().unwrap()),
            60
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
