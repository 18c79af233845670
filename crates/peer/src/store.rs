//! The DHT's record store, bounded for a hostile network: provider records only (ferry stores no
//! values in the DHT), at most `max_keys` digests of other nodes' records and `max_per_key`
//! providers each, expired records swept out when the store fills (at most once a second, so a
//! flood cannot make every insert a scan). Kademlia's own memory store only drops an expired
//! record when it is asked for, so records of blobs nobody asks for again would fill it for good
//! and then refuse this node's own announcements.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// Provider records, this node's own kept apart (they are republished, never swept by others').
#[derive(Debug)]
pub(crate) struct ProviderStore {
    local: PeerId,
    others: HashMap<RecordKey, Vec<ProviderRecord>>,
    own: HashMap<RecordKey, ProviderRecord>,
    max_keys: usize,
    max_per_key: usize,
    last_sweep: Option<Instant>,
}

impl ProviderStore {
    pub(crate) fn new(local: PeerId, max_keys: usize, max_per_key: usize) -> ProviderStore {
        ProviderStore {
            local,
            others: HashMap::new(),
            own: HashMap::new(),
            max_keys,
            max_per_key,
            last_sweep: None,
        }
    }

    /// Digests other nodes' records are held for.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.others.len()
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        self.others.retain(|_, records| {
            records.retain(|r| !r.is_expired(now));
            !records.is_empty()
        });
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = std::iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::iter::Map<
        std::collections::hash_map::Values<'a, RecordKey, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, _: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    fn put(&mut self, _: Record) -> Result<()> {
        Err(Error::MaxRecords)
    }

    fn remove(&mut self, _: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        std::iter::empty()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.local {
            if !self.own.contains_key(&record.key) && self.own.len() >= self.max_keys {
                return Err(Error::MaxProvidedKeys);
            }
            self.own.insert(record.key.clone(), record);
            return Ok(());
        }
        if !self.others.contains_key(&record.key) && self.others.len() >= self.max_keys {
            self.sweep(Instant::now());
            if self.others.len() >= self.max_keys {
                return Err(Error::MaxProvidedKeys);
            }
        }
        let records = self.others.entry(record.key.clone()).or_default();
        if let Some(r) = records.iter_mut().find(|r| r.provider == record.provider) {
            *r = record;
        } else if records.len() < self.max_per_key {
            // A full list ignores newcomers: flooding one digest with fake providers cannot push
            // the real ones out.
            records.push(record);
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let now = Instant::now();
        let mut out: Vec<ProviderRecord> = self
            .others
            .get(key)
            .map(|rs| rs.iter().filter(|r| !r.is_expired(now)).cloned().collect())
            .unwrap_or_default();
        out.extend(self.own.get(key).cloned());
        out
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            self.own.remove(key);
        } else if let Some(records) = self.others.get_mut(key) {
            records.retain(|r| r.provider != *provider);
            if records.is_empty() {
                self.others.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, provider: PeerId, ttl: Duration) -> ProviderRecord {
        ProviderRecord {
            key: RecordKey::new(&key),
            provider,
            expires: Some(Instant::now() + ttl),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn a_flood_of_digests_and_providers_stays_within_the_bounds() {
        let local = PeerId::random();
        let mut store = ProviderStore::new(local, 100, 3);
        let attacker = PeerId::random();
        for i in 0..1000 {
            let _ = store.add_provider(record(&format!("d{i}"), attacker, Duration::from_secs(60)));
        }
        assert_eq!(store.keys(), 100);
        for _ in 0..50 {
            store
                .add_provider(record("d0", PeerId::random(), Duration::from_secs(60)))
                .unwrap();
        }
        assert_eq!(store.providers(&RecordKey::new(&"d0")).len(), 3);
        // The node's own announcement has room of its own.
        store
            .add_provider(record("mine", local, Duration::from_secs(60)))
            .unwrap();
        assert_eq!(store.provided().count(), 1);
        assert_eq!(store.providers(&RecordKey::new(&"mine"))[0].provider, local);
    }

    #[test]
    fn expired_records_are_not_returned_and_make_room_when_the_store_fills() {
        let mut store = ProviderStore::new(PeerId::random(), 2, 20);
        let p = PeerId::random();
        store.add_provider(record("a", p, Duration::ZERO)).unwrap();
        store.add_provider(record("b", p, Duration::ZERO)).unwrap();
        assert!(store.providers(&RecordKey::new(&"a")).is_empty());
        store
            .add_provider(record("c", p, Duration::from_secs(60)))
            .unwrap();
        assert_eq!(store.keys(), 1, "the expired ones were swept to make room");
        store.remove_provider(&RecordKey::new(&"c"), &p);
        assert_eq!(store.keys(), 0);
        assert!(
            store
                .put(Record::new(RecordKey::new(&"v"), vec![1]))
                .is_err(),
            "values are refused"
        );
    }
}
