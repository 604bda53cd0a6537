module github.com/clipper-cloud/clipper/internal/sigv4/sdkcompat

go 1.26.8

require (
	github.com/aws/aws-sdk-go-v2 v1.48.0
	github.com/clipper-cloud/clipper v0.0.0-00010101000000-000000000000
)

require github.com/aws/smithy-go v1.28.9 // indirect

replace github.com/clipper-cloud/clipper => ../../..
