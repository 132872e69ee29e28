// A small S3-compatible server for tests: gofakes3 over an in-memory backend, so the artifact
// store's S3 backend is exercised against the real S3 protocol without a cloud account.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:9000", "address to serve S3 on")
	bucket := flag.String("bucket", "signalbox", "bucket to create at start")
	flag.Parse()
	backend := s3mem.New()
	if err := backend.CreateBucket(*bucket); err != nil {
		log.Fatalf("creating bucket %s: %v", *bucket, err)
	}
	faker := gofakes3.New(backend)
	log.Printf("serving S3 on %s (bucket %s)", *addr, *bucket)
	log.Fatal(http.ListenAndServe(*addr, faker.Server()))
}
