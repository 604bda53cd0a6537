package cloud

import (
	"net/http"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/sigv4"
)

func clientCreds(k model.AccessKey) sigv4.Credentials {
	return sigv4.Credentials{AccessKeyID: k.ID, SecretAccessKey: k.Secret}
}

func defaultHTTP() *http.Client { return &http.Client{} }
