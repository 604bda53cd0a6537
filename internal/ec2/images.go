package ec2

import (
	"context"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

type imageEbsXML struct {
	SnapshotID          string `xml:"snapshotId"`
	VolumeSize          int64  `xml:"volumeSize"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	VolumeType          string `xml:"volumeType"`
	Encrypted           bool   `xml:"encrypted"`
}

type imageBdmXML struct {
	DeviceName string      `xml:"deviceName"`
	Ebs        imageEbsXML `xml:"ebs"`
}

type imageXML struct {
	ImageID            string            `xml:"imageId"`
	ImageLocation      string            `xml:"imageLocation"`
	ImageState         string            `xml:"imageState"`
	ImageOwnerID       string            `xml:"imageOwnerId"`
	CreationDate       Time              `xml:"creationDate"`
	IsPublic           bool              `xml:"isPublic"`
	ProductCodes       List[struct{}]    `xml:"productCodes"`
	Architecture       string            `xml:"architecture"`
	ImageType          string            `xml:"imageType"`
	Name               string            `xml:"name"`
	Description        string            `xml:"description,omitempty"`
	RootDeviceType     string            `xml:"rootDeviceType"`
	RootDeviceName     string            `xml:"rootDeviceName"`
	BlockDeviceMapping List[imageBdmXML] `xml:"blockDeviceMapping"`
	VirtualizationType string            `xml:"virtualizationType"`
	TagSet             List[TagXML]      `xml:"tagSet"`
	Hypervisor         string            `xml:"hypervisor"`
	EnaSupport         bool              `xml:"enaSupport"`
	PlatformDetails    string            `xml:"platformDetails"`
	UsageOperation     string            `xml:"usageOperation"`
	BootMode           string            `xml:"bootMode"`
	ImdsSupport        string            `xml:"imdsSupport"`
}

func toImageXML(img model.Image) imageXML {
	size := (img.Manifest.DiskSize + 1<<30 - 1) >> 30
	if size == 0 {
		size = 1
	}
	return imageXML{
		ImageID: img.ID, ImageLocation: img.Location, ImageState: img.State, ImageOwnerID: img.OwnerID,
		CreationDate: Time(img.Created), IsPublic: img.Public, ProductCodes: List[struct{}]{},
		Architecture: img.Architecture, ImageType: "machine", Name: img.Name, Description: img.Description,
		RootDeviceType: "ebs", RootDeviceName: img.RootDeviceName,
		BlockDeviceMapping: List[imageBdmXML]{{DeviceName: img.RootDeviceName, Ebs: imageEbsXML{
			SnapshotID: derived("snap-", img.ID), VolumeSize: size, DeleteOnTermination: true, VolumeType: "gp3"}}},
		VirtualizationType: "hvm", TagSet: tagsXML(img.Tags), Hypervisor: "kvm",
		PlatformDetails: "Linux/UNIX", UsageOperation: "RunInstances", BootMode: "legacy-bios", ImdsSupport: "v2.0",
	}
}

type describeImagesResponse struct {
	Meta
	ImagesSet List[imageXML] `xml:"imagesSet"`
	NextToken string         `xml:"nextToken,omitempty"`
}

type registerImageResponse struct {
	Meta
	ImageID string `xml:"imageId"`
}

func (h *Handler) registerImages() {
	h.actions["DescribeImages"] = h.describeImages
	h.actions["RegisterImage"] = h.registerImage
	h.actions["DeregisterImage"] = h.deregisterImage
}

func (h *Handler) describeImages(p *Params) (exec, error) {
	ids, err := p.List("ImageId")
	if err != nil {
		return nil, err
	}
	owners, err := p.List("Owner")
	if err != nil {
		return nil, err
	}
	if _, err := p.List("ExecutableBy"); err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	pg, err := p.Page()
	if err != nil {
		return nil, err
	}
	p.Ignore("IncludeDeprecated", "IncludeDisabled")
	return func(ctx context.Context, c service.Caller) (response, error) {
		imgs, next, err := h.svc.DescribeImages(ctx, c, ids, owners, filters, pg)
		if err != nil {
			return nil, err
		}
		out := &describeImagesResponse{ImagesSet: List[imageXML]{}, NextToken: next}
		for _, img := range imgs {
			out.ImagesSet = append(out.ImagesSet, toImageXML(img))
		}
		return out, nil
	}, nil
}

func (h *Handler) registerImage(p *Params) (exec, error) {
	in := service.RegisterInput{Name: p.Str("Name"), Description: p.Str("Description"), Location: p.Str("ImageLocation"),
		Architecture: p.Str("Architecture"), RootDeviceName: p.Str("RootDeviceName")}
	if vt := p.Str("VirtualizationType"); vt != "" && vt != "hvm" {
		return nil, model.InvalidParam("VirtualizationType", "Only hvm images are supported")
	}
	if p.Str("KernelId") != "" || p.Str("RamdiskId") != "" {
		return nil, model.InvalidParam("KernelId", "Clipper images carry their kernel in the uploaded manifest; KernelId and RamdiskId are not used")
	}
	var err error
	if in.Tags, err = p.TagSpecifications("image", "snapshot"); err != nil {
		return nil, err
	}
	p.Ignore("BlockDeviceMapping.", "EnaSupport", "SriovNetSupport", "BootMode", "ImdsSupport", "TpmSupport")
	return func(ctx context.Context, c service.Caller) (response, error) {
		img, err := h.svc.RegisterImage(ctx, c, in)
		if err != nil {
			return nil, err
		}
		return &registerImageResponse{ImageID: img.ID}, nil
	}, nil
}

func (h *Handler) deregisterImage(p *Params) (exec, error) {
	id, err := p.Required("ImageId")
	if err != nil {
		return nil, err
	}
	p.Ignore("DeleteAssociatedSnapshots")
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.DeregisterImage(ctx, c, id); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}
