package ec2

import (
	"encoding/xml"
	"time"
)

// Namespace is the XML namespace of EC2 API version 2016-11-15.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// Meta starts every success response: root element and request ID.
type Meta struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
}

func (m *Meta) meta() *Meta { return m }

// response is any success body; they all embed Meta.
type response interface{ meta() *Meta }

// List is an EC2 list: <name><item>…</item>…</name>, and an empty element
// when it has no items (never omitted).
type List[T any] []T

// MarshalXML writes the wrapper element and one <item> per entry.
func (l List[T]) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	item := xml.StartElement{Name: xml.Name{Local: "item"}}
	for _, v := range l {
		if err := e.EncodeElement(v, item); err != nil {
			return err
		}
	}
	return e.EncodeToken(start.End())
}

// Time is a timestamp as EC2 writes it: ISO 8601, milliseconds, Z.
type Time time.Time

// MarshalText formats the time.
func (t Time) MarshalText() ([]byte, error) {
	return []byte(time.Time(t).UTC().Format("2006-01-02T15:04:05.000Z")), nil
}

// BoolResponse is the body of actions that answer <return>true</return>.
type BoolResponse struct {
	Meta
	Return bool `xml:"return"`
}

// TagXML is one tag in a tagSet.
type TagXML struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

// StateXML is an instance state.
type StateXML struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

// errorResponse is EC2's error document.
type errorResponse struct {
	XMLName   xml.Name    `xml:"Response"`
	Errors    []errorItem `xml:"Errors>Error"`
	RequestID string      `xml:"RequestID"`
}

type errorItem struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}
