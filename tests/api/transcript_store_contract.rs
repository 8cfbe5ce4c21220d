//! One behavioural contract for every `TranscriptStore`, run against each store.
//!
//! SQLite always runs (a fresh temp file per rule). MongoDB runs against
//! `MONGODB_URI` when it is set, in a throwaway database dropped afterwards;
//! without it the run says SKIPPED on stderr, never fakes it, because a mock
//! would prove nothing about the real driver (and fails under `CI`, where
//! `.ci/run` starts SecantusDB, a MongoDB-wire server).

use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use futures_util::FutureExt;

use chatbot_server::adapters::outbound::mongo_transcripts::MongoTranscriptStore;
use chatbot_server::adapters::outbound::sqlite_transcripts::SqliteTranscriptStore;
use chatbot_server::application::ports::{Rated, TranscriptStore};
use chatbot_server::domain::csat::{Csat, CsatRecord};
use chatbot_server::domain::feedback::Feedback;
use chatbot_server::domain::handoff::AgentRef;
use chatbot_server::domain::transcript::{Speaker, TranscriptCursor, TranscriptEntry};
use chatbot_server::domain::{MessageId, SessionId, StreamStatus, UserId, Username};

type Store = Arc<dyn TranscriptStore>;

fn owner() -> UserId {
    UserId::parse("65a1b2c3d4e5f6a7b8c9d0e1").unwrap()
}

fn agent() -> AgentRef {
    AgentRef {
        id: UserId::parse("65a1b2c3d4e5f6a7b8c9d0e2").unwrap(),
        username: Username::parse("agent_bob").unwrap(),
    }
}

/// A fixed instant, so positions are predictable; `ms` after it.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_760_000_000_000 + ms).unwrap()
}

fn entry(
    session: &SessionId,
    speaker: Speaker,
    content: &str,
    seq: u64,
    ms: i64,
) -> TranscriptEntry {
    TranscriptEntry::new(
        session.clone(),
        owner(),
        MessageId::generate(),
        speaker,
        content.to_owned(),
        seq,
        at(ms),
    )
}

fn said(session: &SessionId, seq: u64, ms: i64) -> TranscriptEntry {
    entry(session, Speaker::User, &format!("m{seq}"), seq, ms)
}

fn contents(entries: &[TranscriptEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.content.as_str()).collect()
}

mod contract {
    use super::*;

    fn answer(session: &SessionId, content: &str, seq: u64, ms: i64) -> TranscriptEntry {
        entry(
            session,
            Speaker::Assistant {
                ending: StreamStatus::Completed,
            },
            content,
            seq,
            ms,
        )
    }

    pub async fn a_rating_is_kept_with_its_answer_and_replaced_by_the_next(store: Store) {
        let s = SessionId::generate();
        let asked = said(&s, 1, 0);
        let answered = answer(&s, "an answer", 2, 5);
        let agent_said = entry(&s, Speaker::Agent(agent()), "I am here", 4, 9);
        for e in [&asked, &answered, &agent_said] {
            store.append(e).await.unwrap();
        }
        let down = Feedback::parse("down", Some("wrong \"hours\" é")).unwrap();
        let rated = store.rate(&s, &answered.message_id, &down).await.unwrap();
        assert_eq!(rated, Rated::Done);
        let page = store.page(&s, None, 10).await.unwrap();
        assert_eq!(page.entries[1].feedback, Some(down));
        assert_eq!(page.entries[0].feedback, None);

        let up = Feedback::parse("up", None).unwrap();
        store.rate(&s, &answered.message_id, &up).await.unwrap();
        let page = store.page(&s, None, 10).await.unwrap();
        assert_eq!(
            page.entries[1].feedback,
            Some(up.clone()),
            "replaced, comment and all"
        );

        assert_eq!(
            store.rate(&s, &asked.message_id, &up).await.unwrap(),
            Rated::NotAnAnswer
        );
        assert_eq!(
            store.rate(&s, &agent_said.message_id, &up).await.unwrap(),
            Rated::NotAnAnswer
        );
        assert_eq!(
            store.rate(&s, &MessageId::generate(), &up).await.unwrap(),
            Rated::NotFound
        );
        // Another session's answer is not found from this one.
        let other = SessionId::generate();
        assert_eq!(
            store.rate(&other, &answered.message_id, &up).await.unwrap(),
            Rated::NotFound
        );
        let page = store.page(&s, None, 10).await.unwrap();
        assert_eq!(page.entries[0].feedback, None, "refusals change nothing");
        assert_eq!(page.entries[2].feedback, None);
    }

    pub async fn answers_after_a_question_asked_again_are_superseded(store: Store) {
        let s = SessionId::generate();
        let q1 = said(&s, 1, 0);
        let a1 = answer(&s, "a1", 2, 5);
        let q2 = said(&s, 6, 10);
        let a2 = answer(&s, "a2", 7, 15);
        let agent_said = entry(&s, Speaker::Agent(agent()), "agent", 9, 16);
        // Another answer at the very millisecond of the question, later in the log.
        let same_ms = answer(&s, "same ms", 8, 10);
        for e in [&q1, &a1, &q2, &a2, &agent_said, &same_ms] {
            store.append(e).await.unwrap();
        }
        let other = SessionId::generate();
        let elsewhere = answer(&other, "elsewhere", 9, 20);
        store.append(&elsewhere).await.unwrap();

        let marked = store.supersede_after(&s, &q2.message_id).await.unwrap();
        assert_eq!(marked, 2);
        let page = store.page(&s, None, 10).await.unwrap();
        let superseded: Vec<(&str, bool)> = page
            .entries
            .iter()
            .map(|e| (e.content.as_str(), e.superseded))
            .collect();
        assert_eq!(
            superseded,
            [
                ("m1", false),
                ("a1", false),
                ("m6", false),
                ("same ms", true),
                ("a2", true),
                ("agent", false),
            ]
        );
        assert!(!store.page(&other, None, 10).await.unwrap().entries[0].superseded);
        assert_eq!(
            store
                .supersede_after(&s, &MessageId::generate())
                .await
                .unwrap(),
            0,
            "an unknown question marks nothing"
        );
        assert_eq!(
            store.supersede_after(&other, &q1.message_id).await.unwrap(),
            0,
            "nor one of another session"
        );
    }

    pub async fn entries_read_back_exactly_oldest_first(store: Store) {
        let s = SessionId::generate();
        let asked = entry(&s, Speaker::User, "héllo \"there\"\n\u{1f600}", 1, 0);
        let answered = entry(
            &s,
            Speaker::Assistant {
                ending: StreamStatus::Completed,
            },
            &"long answer ".repeat(4000),
            2,
            5,
        );
        let stopped = entry(
            &s,
            Speaker::Assistant {
                ending: StreamStatus::Cancelled,
            },
            "partial",
            6,
            9,
        );
        let agent_said = entry(&s, Speaker::Agent(agent()), "I am here", 9, 12);
        for e in [&asked, &answered, &stopped, &agent_said] {
            store.append(e).await.unwrap();
        }
        let page = store.page(&s, None, 10).await.unwrap();
        assert_eq!(page.entries, vec![asked, answered, stopped, agent_said]);
        assert_eq!(page.next, None, "nothing older");
    }

    pub async fn timestamps_keep_milliseconds(store: Store) {
        let s = SessionId::generate();
        let now = Utc::now();
        let e = TranscriptEntry::new(
            s.clone(),
            owner(),
            MessageId::generate(),
            Speaker::User,
            "x".into(),
            1,
            now,
        );
        store.append(&e).await.unwrap();
        let back = store.page(&s, None, 1).await.unwrap().entries;
        assert_eq!(back[0].at, now.trunc_subsecs(3));
    }

    pub async fn pages_go_back_from_the_newest(store: Store) {
        let s = SessionId::generate();
        for i in 1..=5 {
            store.append(&said(&s, i, i as i64 * 10)).await.unwrap();
        }
        let first = store.page(&s, None, 2).await.unwrap();
        assert_eq!(contents(&first.entries), ["m4", "m5"]);
        let next = first.next.expect("older entries exist");
        assert_eq!(next, first.entries[0].position());
        let second = store.page(&s, Some(next), 2).await.unwrap();
        assert_eq!(contents(&second.entries), ["m2", "m3"]);
        let third = store.page(&s, second.next, 2).await.unwrap();
        assert_eq!(contents(&third.entries), ["m1"]);
        assert_eq!(third.next, None);
        // A page that ends exactly at the oldest entry says so too.
        let exact = store
            .page(&s, Some(second.entries[0].position()), 1)
            .await
            .unwrap();
        assert_eq!(contents(&exact.entries), ["m1"]);
        assert_eq!(exact.next, None);
        // A cursor past everything, or before everything.
        let all = store
            .page(
                &s,
                Some(TranscriptCursor {
                    at_ms: i64::MAX,
                    seq: 0,
                }),
                10,
            )
            .await
            .unwrap();
        assert_eq!(all.entries.len(), 5);
        let none = store
            .page(&s, Some(TranscriptCursor { at_ms: 0, seq: 0 }), 10)
            .await
            .unwrap();
        assert!(none.entries.is_empty() && none.next.is_none());
    }

    /// Time first, then seq, whatever order they were written in: a log that
    /// restarted its seqs cannot put a later message before an earlier one.
    pub async fn order_is_time_then_seq_not_insertion(store: Store) {
        let s = SessionId::generate();
        let late_low_seq = said(&s, 1, 100);
        let same_ms_b = said(&s, 8, 50);
        let same_ms_a = said(&s, 7, 50);
        let early = said(&s, 9, 10);
        for e in [&late_low_seq, &same_ms_b, &same_ms_a, &early] {
            store.append(e).await.unwrap();
        }
        let page = store.page(&s, None, 10).await.unwrap();
        assert_eq!(contents(&page.entries), ["m9", "m7", "m8", "m1"]);
        // Paging between the two of the same millisecond.
        let older = store
            .page(&s, Some(same_ms_b.position()), 10)
            .await
            .unwrap();
        assert_eq!(contents(&older.entries), ["m9", "m7"]);
    }

    pub async fn a_message_recorded_twice_is_kept_once(store: Store) {
        let s = SessionId::generate();
        let e = said(&s, 1, 0);
        store.append(&e).await.unwrap();
        let mut again = e.clone();
        again.content = "changed".into();
        store.append(&again).await.unwrap();
        let page = store.page(&s, None, 10).await.unwrap();
        assert_eq!(page.entries, vec![e], "the first recording stands");
    }

    pub async fn sessions_are_apart_and_know_their_owner(store: Store) {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        store.append(&said(&a, 1, 0)).await.unwrap();
        let mut other = said(&b, 1, 0);
        other.owner = UserId::parse("someone_else").unwrap();
        store.append(&other).await.unwrap();
        assert_eq!(
            contents(&store.page(&a, None, 10).await.unwrap().entries),
            ["m1"]
        );
        assert_eq!(store.owner(&a).await.unwrap(), Some(owner()));
        assert_eq!(store.owner(&b).await.unwrap(), Some(other.owner));
        let unknown = SessionId::generate();
        assert_eq!(store.owner(&unknown).await.unwrap(), None);
        let empty = store.page(&unknown, None, 10).await.unwrap();
        assert!(empty.entries.is_empty() && empty.next.is_none());
    }

    pub async fn erase_forgets_one_session_only(store: Store) {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        for i in 1..=3 {
            store.append(&said(&a, i, i as i64)).await.unwrap();
        }
        store.append(&said(&b, 1, 0)).await.unwrap();
        assert_eq!(store.erase(&a).await.unwrap(), 3);
        assert!(store.page(&a, None, 10).await.unwrap().entries.is_empty());
        assert_eq!(store.owner(&a).await.unwrap(), None);
        assert_eq!(store.page(&b, None, 10).await.unwrap().entries.len(), 1);
        assert_eq!(
            store.erase(&a).await.unwrap(),
            0,
            "erasing again is no error"
        );
    }

    /// The satisfaction record: asked once per resolve, answered (again:
    /// replaced) only while the request is recent enough, forgotten with
    /// the conversation.
    pub async fn satisfaction_is_asked_answered_replaced_and_erased(store: Store) {
        let (s, other) = (SessionId::generate(), SessionId::generate());
        let answer = |rating, comment| Csat::parse(rating, comment).unwrap();
        assert_eq!(store.csat(&s).await.unwrap(), None);
        assert_eq!(
            store
                .answer_csat(&s, &answer(5, None), at(10), at(0))
                .await
                .unwrap(),
            None,
            "nothing was asked"
        );
        let asked = CsatRecord {
            session: s.clone(),
            user: owner(),
            agent: agent(),
            requested_at: at(1_000),
            answer: None,
        };
        store.request_csat(&asked).await.unwrap();
        assert_eq!(store.csat(&s).await.unwrap(), Some(asked.clone()));
        // Too late: the request is older than the window allows.
        assert_eq!(
            store
                .answer_csat(&s, &answer(4, None), at(5_000), at(1_001))
                .await
                .unwrap(),
            None
        );
        let first = store
            .answer_csat(&s, &answer(2, Some("slow")), at(2_000), at(1_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.answer, Some((answer(2, Some("slow")), at(2_000))));
        assert_eq!(first.agent, agent());
        let second = store
            .answer_csat(&s, &answer(5, None), at(3_000), at(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            second.answer,
            Some((answer(5, None), at(3_000))),
            "replaced"
        );
        assert_eq!(store.csat(&s).await.unwrap(), Some(second));
        assert_eq!(store.csat(&other).await.unwrap(), None);
        // Asked again (a later resolve): the old answer goes.
        let again = CsatRecord {
            requested_at: at(9_000),
            ..asked
        };
        store.request_csat(&again).await.unwrap();
        assert_eq!(store.csat(&s).await.unwrap(), Some(again));
        store.append(&said(&s, 1, 0)).await.unwrap();
        store.erase(&s).await.unwrap();
        assert_eq!(store.csat(&s).await.unwrap(), None);
    }

    /// Retention: everything said before the cutoff goes, in every session;
    /// nothing after it.
    pub async fn expire_forgets_what_is_older_than_the_cutoff(store: Store) {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let now = Utc::now();
        let old = |s: &SessionId, seq, days| {
            TranscriptEntry::new(
                s.clone(),
                owner(),
                MessageId::generate(),
                Speaker::User,
                format!("m{seq}"),
                seq,
                now - Duration::days(days),
            )
        };
        for e in [
            old(&a, 1, 40),
            old(&a, 2, 31),
            old(&a, 3, 1),
            old(&b, 1, 35),
            old(&b, 2, 0),
        ] {
            store.append(&e).await.unwrap();
        }
        let removed = store.expire(now - Duration::days(30)).await.unwrap();
        // Other rules share a Mongo database: count at least ours.
        assert!(removed >= 3, "{removed}");
        assert_eq!(
            contents(&store.page(&a, None, 10).await.unwrap().entries),
            ["m3"]
        );
        assert_eq!(
            contents(&store.page(&b, None, 10).await.unwrap().entries),
            ["m2"]
        );
        assert_eq!(store.expire(now - Duration::days(30)).await.unwrap(), 0);
    }
}

macro_rules! rules {
    ($($rule:ident),* $(,)?) => {
        const RULES: &[&str] = &[$(stringify!($rule)),*];

        async fn run_contract(label: &str, fresh: &(dyn Fn() -> futures_util::future::BoxFuture<'static, Store> + Sync)) {
            $(
                eprintln!("[{label}] {}", stringify!($rule));
                contract::$rule(fresh().await).await;
            )*
        }
    };
}

rules!(
    entries_read_back_exactly_oldest_first,
    timestamps_keep_milliseconds,
    pages_go_back_from_the_newest,
    order_is_time_then_seq_not_insertion,
    a_message_recorded_twice_is_kept_once,
    sessions_are_apart_and_know_their_owner,
    erase_forgets_one_session_only,
    expire_forgets_what_is_older_than_the_cutoff,
    a_rating_is_kept_with_its_answer_and_replaced_by_the_next,
    answers_after_a_question_asked_again_are_superseded,
    satisfaction_is_asked_answered_replaced_and_erased,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_transcript_store_satisfies_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let fresh = move || -> futures_util::future::BoxFuture<'static, Store> {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = base.join(format!("rule{n}.db"));
        Box::pin(async move {
            let store: Store = Arc::new(SqliteTranscriptStore::open(&path).await.unwrap());
            store
        })
    };
    run_contract("sqlite", &fresh).await;
    assert!(!RULES.is_empty());
}

/// A restart opens the same file: what was kept is still there.
#[tokio::test]
async fn sqlite_transcripts_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatbot.db");
    let s = SessionId::generate();
    {
        let store = SqliteTranscriptStore::open(&path).await.unwrap();
        store.append(&said(&s, 1, 0)).await.unwrap();
    }
    let store = SqliteTranscriptStore::open(&path).await.unwrap();
    assert_eq!(
        contents(&store.page(&s, None, 10).await.unwrap().entries),
        ["m1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_transcript_store_satisfies_the_contract() {
    let uri = match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.trim().is_empty() => uri.trim().to_owned(),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "MONGODB_URI must be set in CI (.ci/run starts SecantusDB)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED mongo transcript-store contract: MONGODB_URI is not set"
            );
            return;
        }
    };
    let database = format!("chatbot_transcripts_{}", uuid::Uuid::new_v4().simple());
    let mut options = mongodb::options::ClientOptions::parse(&uri)
        .await
        .expect("MONGODB_URI must parse");
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    let client = mongodb::Client::with_options(options).unwrap();
    let db = client.database(&database);
    let outcome = AssertUnwindSafe(async {
        let store: Store = Arc::new(
            MongoTranscriptStore::open(&db)
                .await
                .unwrap_or_else(|e| panic!("cannot reach MongoDB at MONGODB_URI: {e}")),
        );
        // Every rule uses sessions of its own, so they share one collection.
        let fresh = move || -> futures_util::future::BoxFuture<'static, Store> {
            let store = store.clone();
            Box::pin(async move { store })
        };
        run_contract("mongo", &fresh).await;
        let indexes = db
            .collection::<mongodb::bson::Document>("messages")
            .list_index_names()
            .await
            .unwrap();
        assert!(
            indexes.iter().any(|i| i == "sessionId_1_at_1_seq_1"),
            "{indexes:?}"
        );
    })
    .catch_unwind()
    .await;
    if let Err(e) = db.drop().await {
        eprintln!("warning: could not drop throwaway database {database}: {e}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
