package cloud

import (
	"errors"
	"net"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// RetryClosed is the tests' retry policy: an EC2 error is never retried
// (tests check the codes), but a read on a connection Go's transport closed
// is, up to three attempts. That happens to buffered requests when the SDK
// closes the request body as the response arrives while the transport's
// write loop still reads it for EOF (aws/aws-sdk-go-v2#2737; the SDK's
// default retryer retries net.ErrClosed for the same reason).
func RetryClosed() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 3
		o.Retryables = []retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			if errors.Is(err, net.ErrClosed) {
				return aws.TrueTernary
			}
			return aws.FalseTernary
		})}
	})
}
