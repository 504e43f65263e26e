//! A check of an .xls file's container (the OLE compound file) before calamine reads it.
//! calamine follows the file allocation table's sector chains without bounding them: a chain
//! that loops makes it append the same sectors until memory runs out (the directory chain is
//! read with no length limit). Every chain of a well-formed file ends, so a table with a loop
//! is refused here; with none, no chain is longer than the file.

const SIGNATURE: &[u8; 8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";
/// Sector ids from here up are markers (end of chain, free, FAT or DIFAT sector), not sectors.
const RESERVED: u32 = 0xFFFF_FFFA;

/// Whether `bytes` are a compound file (an .xls, or anything else OLE).
pub(super) fn is_compound_file(bytes: &[u8]) -> bool {
    bytes.starts_with(SIGNATURE)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Refuses a compound file whose allocation table has a loop; reads it as calamine does
/// (header DIFAT entries, then the DIFAT sector chain, then each FAT sector). Anything else
/// wrong with the file is left to calamine, which reports it.
pub(super) fn check(bytes: &[u8]) -> Result<(), String> {
    let size: usize = match bytes.get(30..32) {
        Some([9, 0]) => 512,
        Some([12, 0]) => 4096,
        _ => return Ok(()),
    };
    // Sector `id` starts after the header, which takes one sector.
    let sector = |id: u32| -> &[u8] {
        let start = (id as usize).saturating_add(1).saturating_mul(size);
        bytes.get(start..bytes.len().min(start.saturating_add(size))).unwrap_or(&[])
    };
    let sectors = bytes.len() / size;
    let mut difat: Vec<u32> = (0..109).filter_map(|i| u32_at(bytes, 76 + 4 * i)).collect();
    let mut next = u32_at(bytes, 68).unwrap_or(u32::MAX);
    let mut steps = 0;
    while next < RESERVED {
        steps += 1;
        if steps > sectors + 1 {
            return Err("the file is corrupt (its sector table loops)".into());
        }
        let s = sector(next);
        difat.extend(s.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        next = difat.pop().unwrap_or(u32::MAX);
    }
    let mut fat: Vec<u32> = Vec::new();
    for id in difat.into_iter().filter(|id| *id < RESERVED) {
        if fat.len() > sectors.saturating_add(size) {
            break;
        }
        fat.extend(sector(id).chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    }
    // The table maps each sector to the next of its chain: a chain loops when following it
    // comes back to a sector on the path being followed. Each sector is walked once.
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const ENDS: u8 = 2;
    let mut state = vec![NEW; fat.len()];
    let mut path = Vec::new();
    for start in 0..fat.len() {
        let mut at = start;
        while at < fat.len() && state[at] == NEW {
            state[at] = ON_PATH;
            path.push(at);
            at = fat[at] as usize;
        }
        if at < fat.len() && state[at] == ON_PATH {
            return Err("the file is corrupt (a chain of its sectors loops)".into());
        }
        for p in path.drain(..) {
            state[p] = ENDS;
        }
    }
    Ok(())
}
