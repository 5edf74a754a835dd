use meridian_domain::ShardId;
use meridian_storage::shard::ShardStore;
use meridian_storage::Db;
use std::collections::BTreeMap;

fn frames(data: &[u8]) -> (Vec<u8>, BTreeMap<(u8, Vec<u8>), Vec<u8>>) {
    let mut pos = 8;
    let frame = |pos: &mut usize| {
        let len = u32::from_be_bytes(data[*pos..*pos + 4].try_into().unwrap()) as usize;
        let b = data[*pos + 4..*pos + 4 + len].to_vec();
        *pos += 4 + len;
        b
    };
    let applied = frame(&mut pos);
    let mut m = BTreeMap::new();
    loop {
        let tag = data[pos];
        pos += 1;
        if tag == 0xff {
            break;
        }
        let k = frame(&mut pos);
        let v = frame(&mut pos);
        m.insert((tag, k), v);
    }
    (applied, m)
}

#[test]
fn dump() {
    let dir = std::env::var("DUMP_DIR").unwrap();
    let shard: u32 = std::env::var("DUMP_SHARD").unwrap().parse().unwrap();
    let mut all = Vec::new();
    for n in 1..=3 {
        let db = Db::open(&std::path::Path::new(&dir).join(format!("node-{n}/db"))).unwrap();
        let store = ShardStore::new(db, ShardId(shard), 8);
        let (applied, data) = store.export_snapshot().unwrap();
        eprintln!("node {n}: applied {applied:?} hash {:?}", store.state_hash().unwrap());
        let f = frames(&data);
        // Recompute the state hash for every order of the three membership map entries.
        let a = &f.0;
        let start = a.windows(3).position(|w| w == [0x12, 0x13, 0x08]).unwrap();
        let chunks: Vec<Vec<u8>> = (0..3).map(|i| a[start + 21 * i..start + 21 * (i + 1)].to_vec()).collect();
        for perm in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let mut bytes = a[..start].to_vec();
            for p in perm {
                bytes.extend_from_slice(&chunks[p]);
            }
            bytes.extend_from_slice(&a[start + 63..]);
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(&bytes);
            for (i, cf) in ["events", "projections", "outbox", "dedup"].iter().enumerate() {
                h.update(cf.as_bytes());
                for ((tag, k), v) in &f.1 {
                    if *tag as usize != i {
                        continue;
                    }
                    let mut key = shard.to_be_bytes().to_vec();
                    key.extend_from_slice(k);
                    h.update((key.len() as u64).to_be_bytes());
                    h.update(&key);
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v);
                }
            }
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            let ids: Vec<u8> = perm.iter().map(|&p| chunks[p][3]).collect();
            eprintln!("node {n}: membership node order {ids:?} -> hash {hex}");
        }
        all.push(f);
    }
    for n in 1..3 {
        let (a, b) = (&all[0].1, &all[n].1);
        for (k, v) in a {
            match b.get(k) {
                None => eprintln!("only node1 vs node{}: {:?} {:?}", n + 1, k.0, String::from_utf8_lossy(&k.1)),
                Some(v2) if v2 != v => eprintln!(
                    "differs node1 vs node{}: {:?} {:?}\n  {:?}\n  {:?}",
                    n + 1,
                    k.0,
                    String::from_utf8_lossy(&k.1),
                    v,
                    v2
                ),
                _ => {}
            }
        }
        for k in b.keys() {
            if !a.contains_key(k) {
                eprintln!("only node{}: {:?} {:?}", n + 1, k.0, String::from_utf8_lossy(&k.1));
            }
        }
    }
}
