package ec2

import (
	"errors"
	"net/http"

	"github.com/clipper-cloud/clipper/internal/model"
)

// Error is an EC2 error as it goes on the wire.
type Error struct {
	Code    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, msg string) *Error {
	return &Error{Code: code, Message: msg, Status: status}
}

// codes maps a domain error kind, and the resource it concerns, to an EC2
// error code. "" as resource is the default for the kind.
var codes = map[model.Kind]map[string]string{
	model.KindNotFound: {
		"":                   "InvalidParameterValue",
		model.ResInstance:    "InvalidInstanceID.NotFound",
		model.ResImage:       "InvalidAMIID.NotFound",
		model.ResKeyPair:     "InvalidKeyPair.NotFound",
		model.ResUpload:      "InvalidParameterValue",
		"accesskey":          "AuthFailure",
		model.ResTag:         "InvalidID",
		model.ResGroup:       "InvalidGroup.NotFound",
		model.ResVPC:         "InvalidVpcID.NotFound",
		model.ResSubnet:      "InvalidSubnetID.NotFound",
		model.ResPermission:  "InvalidPermission.NotFound",
		model.ResRule:        "InvalidSecurityGroupRuleId.NotFound",
		model.ResInterface:   "InvalidNetworkInterfaceID.NotFound",
		model.ResAllocation:  "InvalidAllocationID.NotFound",
		model.ResAssociation: "InvalidAssociationID.NotFound",
		model.ResAddress:     "InvalidAddress.NotFound",
	},
	model.KindMalformed: {
		"":                   "InvalidParameterValue",
		model.ResInstance:    "InvalidInstanceID.Malformed",
		model.ResImage:       "InvalidAMIID.Malformed",
		model.ResKeyPair:     "InvalidKeyPair.Format",
		model.ResPublicKey:   "InvalidKey.Format",
		model.ResTag:         "InvalidID",
		model.ResGroup:       "InvalidGroupId.Malformed",
		model.ResAllocation:  "InvalidAllocationID.Malformed",
		model.ResAssociation: "InvalidAssociationID.Malformed",
	},
	model.KindDuplicate: {
		"":                  "InvalidParameterValue",
		model.ResKeyPair:    "InvalidKeyPair.Duplicate",
		model.ResImage:      "InvalidAMIName.Duplicate",
		model.ResGroup:      "InvalidGroup.Duplicate",
		model.ResPermission: "InvalidPermission.Duplicate",
	},
	model.KindInUse: {"": "InvalidParameterValue", model.ResInterface: "InvalidIPAddress.InUse",
		model.ResAddress: "InvalidIPAddress.InUse", model.ResAssociation: "Resource.AlreadyAssociated"},
	model.KindInvalidParameter:     {"": "InvalidParameterValue", "default-group": "CannotDelete"},
	model.KindMissingParameter:     {"": "MissingParameter"},
	model.KindUnknownParameter:     {"": "UnknownParameter"},
	model.KindParameterCombination: {"": "InvalidParameterCombination", "idempotency": "IdempotentParameterMismatch"},
	model.KindIncorrectState:       {"": "IncorrectState", model.ResInstance: "IncorrectInstanceState"},
	model.KindUnsupported:          {"": "UnsupportedOperation", "protected": "OperationNotPermitted"},
	model.KindDependencyViolation:  {"": "DependencyViolation"},
	model.KindInsufficientCapacity: {"": "InsufficientInstanceCapacity", "subnet": "InsufficientFreeAddressesInSubnet",
		model.ResAddress: "InsufficientAddressCapacity"},
	model.KindLimitExceeded: {"": "ResourceLimitExceeded", model.ResTag: "TagLimitExceeded",
		model.ResRule: "RulesPerSecurityGroupLimitExceeded", model.ResGroup: "SecurityGroupsPerInstanceLimitExceeded",
		model.ResAddress: "AddressLimitExceeded"},
	model.KindUnauthorized: {"": "UnauthorizedOperation"},
	model.KindAuthFailure:  {"": "AuthFailure"},
}

// statuses gives the HTTP status of an EC2 code; anything else is 400.
var statuses = map[string]int{
	"AuthFailure":                  http.StatusUnauthorized,
	"UnauthorizedOperation":        http.StatusForbidden,
	"DryRunOperation":              http.StatusPreconditionFailed,
	"RequestLimitExceeded":         http.StatusServiceUnavailable,
	"InsufficientInstanceCapacity": http.StatusInternalServerError,
	"InternalError":                http.StatusInternalServerError,
	"Unavailable":                  http.StatusServiceUnavailable,
}

// toEC2 translates any error into the EC2 error to send.
func toEC2(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var de *model.Error
	if !errors.As(err, &de) || de.Kind == model.KindInternal {
		return newError(http.StatusInternalServerError, "InternalError",
			"An internal error has occurred. The failure was logged with this request ID.")
	}
	byRes := codes[de.Kind]
	code, ok := byRes[de.Resource]
	if !ok {
		code = byRes[""]
	}
	status, ok := statuses[code]
	if !ok {
		status = http.StatusBadRequest
	}
	return newError(status, code, de.Error())
}

// ErrorFor translates any error into its EC2 code, message and status, for
// other edges (the JSON API) that speak the same vocabulary.
func ErrorFor(err error) *Error { return toEC2(err) }
