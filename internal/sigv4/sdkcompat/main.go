package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
)

func main() {
	out := flag.String("out", filepath.Join("..", "testdata", "sdk"), "directory to write the signed requests to")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	version := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, m := range info.Deps {
			if m.Path == "github.com/aws/aws-sdk-go-v2" {
				version = m.Version
			}
		}
	}
	for _, c := range cases() {
		r, _, err := sign(c)
		if err != nil {
			log.Fatalf("%s: %v", c.name, err)
		}
		wire, err := dump(r)
		if err != nil {
			log.Fatalf("%s: %v", c.name, err)
		}
		text := fmt.Sprintf("-- meta --\nsdk: github.com/aws/aws-sdk-go-v2 %s\ntime: %s\nservice: %s\n-- wire --\n%s\n",
			version, signingTime().Format("20060102T150405Z"), c.service, wire)
		if err := os.WriteFile(filepath.Join(*out, c.name+".txt"), []byte(text), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// dump renders r as a Go client sends it, with LF line ends in the head.
func dump(r *http.Request) (string, error) {
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		return "", err
	}
	head, body, _ := strings.Cut(b.String(), "\r\n\r\n")
	return strings.ReplaceAll(head, "\r\n", "\n") + "\n\n" + body, nil
}
