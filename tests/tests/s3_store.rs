//! The origin store on an S3-compatible bucket (a real S3 protocol server, gofakes3): pushes
//! are checked and recorded, listed and read back verified, and a region's cache fills from it,
//! exactly as on the local directory.

use signalbox_devstack::s3::S3Server;
use signalbox_store::{ArtifactStore, Format, Record, digest_of};

#[test]
fn the_origin_store_on_s3_takes_pushes_lists_them_and_fills_a_cache() {
    signalbox_tests::run(async {
        let dir = tempfile::tempdir()?;
        let s3 = S3Server::start(dir.path(), "builds").await?;
        let store = ArtifactStore::open("s3://builds/origin", s3.options())?;
        let bundle = std::fs::read(signalbox_tests::pack_hello(dir.path(), "1.0.0", 0.0)?)?;
        let mut record = Record::new("hello-py", "1.0.0", "0a1b2c3d");
        record.pushed_by = Some("ci".into());
        let (digest, stored, new) = store.push(bundle.clone(), record.clone()).await?;
        assert!(new);
        assert_eq!((digest.clone(), stored.format, stored.size), (digest_of(&bundle), Format::Bundle, bundle.len() as u64));
        let (_, _, again) = store.push(bundle.clone(), record).await?;
        assert!(!again, "the same bytes are stored once");
        assert_eq!(store.get(&digest).await?, bundle);
        let listed: Vec<_> = store.list(Some("hello-py")).await?.into_iter().map(|(d, r)| (d, r.version)).collect();
        assert_eq!(listed, [(digest.clone(), "1.0.0".to_owned())]);
        let bad = Record::new("hello-py", "1.1.0", "not-hex");
        assert!(store.push(b"other".to_vec(), bad).await.is_err());
        assert!(!store.contains(&digest_of(b"other")).await?, "a refused push stores nothing in the bucket");

        let cache = ArtifactStore::local(&dir.path().join("cache"))?;
        assert!(cache.fill_from(&store, &digest, "deploy-1").await?);
        assert_eq!(cache.get(&digest).await?, bundle);
        // Another prefix of the same bucket is another store.
        let other = ArtifactStore::open("s3://builds/elsewhere", s3.options())?;
        assert!(!other.contains(&digest).await?);
        Ok(())
    });
}
