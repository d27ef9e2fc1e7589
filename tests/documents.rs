//! The documents' stores and limits, below the socket side (which tests/js/test/
//! documents.test.js drives with the stock y-socket.io client): each backend (memory,
//! redb on disk, Redis) gives back every appended update merged, before and after a
//! compaction, across a reopen of the file; two Redis stores compacting one document while
//! updates keep coming lose none; an update or a document past its limit, and bytes that
//! are not an update, are refused and change nothing.

mod common;

use std::sync::Arc;

use common::*;
use roomcast::config::{ClusterMode, DocumentsConfig};
use roomcast::documents::{
    DiskDocuments, DocError, DocId, DocumentStore, Documents, MemoryDocuments, RedisDocuments,
};
use roomcast::rooms::Id;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// An update inserting `text` at the end of root `content`, made by its own client.
fn insert(text: &str) -> Vec<u8> {
    let doc = Doc::new();
    let root = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    root.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

/// The texts of `content` each single-client update put in, sorted (concurrent inserts at
/// 0 land in client-id order, so compare the pieces, not their order).
fn pieces(update: &[u8], expected: &[String]) -> bool {
    let doc = Doc::new();
    let root = doc.get_or_insert_text("content");
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    let text = root.get_string(&doc.transact());
    expected.iter().all(|p| text.contains(p.as_str()))
        && text.len() == expected.iter().map(String::len).sum::<usize>()
}

async fn round_trip(store: &dyn DocumentStore, key: &str, compact_every: usize) {
    assert_eq!(store.load(key).await.unwrap(), None);
    let mut expected = Vec::new();
    for i in 0..12 {
        let piece = format!("<{i}>");
        let count = store.append(key, &insert(&piece)).await.unwrap();
        expected.push(piece);
        if count as usize >= compact_every {
            store.compact(key).await.unwrap();
        }
        assert!(pieces(&store.load(key).await.unwrap().unwrap(), &expected));
    }
    store.compact(key).await.unwrap();
    // Compacted: one state, an empty log (the next append counts 1).
    assert_eq!(store.append(key, &insert("<last>")).await.unwrap(), 1);
    expected.push("<last>".into());
    assert!(pieces(&store.load(key).await.unwrap().unwrap(), &expected));
    assert_eq!(store.load("other/key").await.unwrap(), None);
}

#[tokio::test]
async fn memory_keeps_every_update_through_compactions() {
    round_trip(&MemoryDocuments::default(), "default/project:1/spec", 5).await;
}

#[tokio::test]
async fn disk_keeps_every_update_through_compactions_and_a_reopen() {
    let dir = std::env::temp_dir().join(format!(
        "roomcast-documents-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("roomcast.redb");
    {
        let db = Arc::new(redb::Database::create(&file).unwrap());
        let store = DiskDocuments::open(db).unwrap();
        round_trip(&store, "default/project:1/spec", 4).await;
        store
            .append("default/project:1/spec", &insert("<after>"))
            .await
            .unwrap();
    }
    let db = Arc::new(redb::Database::create(&file).unwrap());
    let store = DiskDocuments::open(db).unwrap();
    let loaded = store.load("default/project:1/spec").await.unwrap().unwrap();
    let doc = Doc::new();
    let root = doc.get_or_insert_text("content");
    doc.transact_mut()
        .apply_update(Update::decode_v1(&loaded).unwrap())
        .unwrap();
    let text = root.get_string(&doc.transact());
    assert!(
        text.contains("<after>") && text.contains("<last>") && text.contains("<0>"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn redis_store(redis: &RedisServer, prefix: &str) -> RedisDocuments {
    let conn = roomcast::redis_conn::RedisConn::open(
        ClusterMode::Standalone,
        &format!("redis://127.0.0.1:{}", redis.port),
        |_| {},
    )
    .unwrap();
    RedisDocuments::new(conn, prefix)
}

#[tokio::test]
async fn redis_keeps_every_update_through_compactions() {
    let redis = RedisServer::start().await;
    round_trip(&redis_store(&redis, "rc-docs"), "default/project:1/spec", 3).await;
}

#[tokio::test]
async fn two_redis_stores_compacting_at_once_lose_no_update() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        redis_store(&redis, "rc-race"),
        redis_store(&redis, "rc-race"),
    );
    let key = "default/project:1/race";
    let writer = |store: &'static RedisDocuments, name: &'static str| async move {
        let mut mine = Vec::new();
        for i in 0..60 {
            let piece = format!("<{name}{i}>");
            store.append(key, &insert(&piece)).await.unwrap();
            mine.push(piece);
            if i % 3 == 0 {
                store.compact(key).await.unwrap();
            }
        }
        mine
    };
    let (a, b): (&'static _, &'static _) = (Box::leak(Box::new(a)), Box::leak(Box::new(b)));
    let (mut x, y) = tokio::join!(writer(a, "a"), writer(b, "b"));
    x.extend(y);
    a.compact(key).await.unwrap();
    assert!(pieces(&b.load(key).await.unwrap().unwrap(), &x));
}

fn documents(config: DocumentsConfig) -> Documents {
    Documents::new(Arc::new(MemoryDocuments::default()), config, None)
}

fn id() -> DocId {
    DocId::parse(Id::parse("default").unwrap(), "project:1/spec").unwrap()
}

#[tokio::test]
async fn updates_past_the_limits_and_garbage_are_refused_and_change_nothing() {
    let docs = documents(DocumentsConfig {
        max_update_bytes: 64,
        max_document_bytes: 200,
        ..DocumentsConfig::default()
    });
    let doc = docs.open(&id()).await.unwrap();
    assert_eq!(
        docs.update(&doc, &insert(&"x".repeat(100))).await,
        Err(DocError::UpdateTooLarge { limit: 64 })
    );
    for garbage in [
        vec![],
        vec![255; 10],
        vec![1, 200, 200, 200, 200, 200, 1, 0],
        b"hello world".to_vec(),
    ] {
        let answer = docs.update(&doc, &garbage).await;
        assert!(
            matches!(answer, Err(DocError::InvalidUpdate) | Ok(false)),
            "{garbage:?}: {answer:?}"
        );
        assert!(matches!(
            docs.awareness(&doc, &garbage).await,
            Err(DocError::InvalidUpdate) | Ok(_)
        ));
    }
    let mut fills = 0;
    loop {
        match docs.update(&doc, &insert("0123456789")).await {
            Ok(true) => fills += 1,
            Err(DocError::DocumentTooLarge { limit: 200 }) => break,
            other => panic!("{other:?}"),
        }
        assert!(fills < 50, "the document limit never hit");
    }
    let whole = doc
        .diff(&StateVector::default().encode_v1_bytes())
        .await
        .unwrap();
    let copy = Doc::new();
    let root = copy.get_or_insert_text("content");
    copy.transact_mut()
        .apply_update(Update::decode_v1(&whole).unwrap())
        .unwrap();
    assert_eq!(root.get_string(&copy.transact()).len(), 10 * fills);
    docs.release(&doc).await;
    assert_eq!(docs.open_count(), 0);
}

/// `StateVector::encode_v1` under a name that does not clash with the test's imports.
trait Encoded {
    fn encode_v1_bytes(&self) -> Vec<u8>;
}

impl Encoded for StateVector {
    fn encode_v1_bytes(&self) -> Vec<u8> {
        use yrs::updates::encoder::Encode;
        self.encode_v1()
    }
}

#[tokio::test]
async fn random_bytes_never_panic_the_server_nor_cost_it_much() {
    let docs = documents(DocumentsConfig::default());
    let doc = docs.open(&id()).await.unwrap();
    // A few bytes claiming ~100 million entries: yrs would reserve them all first.
    let bomb = [0x80, 0x80, 0x80, 0x30, 1, 2, 3, 4, 5, 6];
    assert_eq!(docs.update(&doc, &bomb).await, Err(DocError::InvalidUpdate));
    assert!(matches!(
        docs.awareness(&doc, &bomb).await,
        Err(DocError::InvalidUpdate)
    ));
    assert!(matches!(
        doc.diff(&bomb).await,
        Err(DocError::InvalidUpdate)
    ));
    // Unchecked, 2,000 of these took a minute of CPU (mostly the kernel zeroing pages).
    let started = std::time::Instant::now();
    for i in 0..2000u32 {
        let len = (i % 40) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let _ = docs.update(&doc, &bytes).await;
        let _ = docs.awareness(&doc, &bytes).await;
        let _ = doc.diff(&bytes).await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Still a working document.
    assert_eq!(docs.update(&doc, &insert("ok")).await, Ok(true));
    let _ = ReadTxn::state_vector(&Doc::new().transact());
}
