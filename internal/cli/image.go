package cli

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/clipper-cloud/clipper/internal/client"
	"github.com/clipper-cloud/clipper/internal/model"
)

// clientFlags are the connection flags of client commands.
type clientFlags struct {
	endpoint, region string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.endpoint, "endpoint-url", "", "controller URL (default $AWS_ENDPOINT_URL)")
	cmd.Flags().StringVar(&f.region, "region", "", "region (default $AWS_REGION or $AWS_DEFAULT_REGION)")
}

func (f *clientFlags) client() (*client.Client, error) {
	return client.FromEnv(client.Options{Endpoint: f.endpoint, Region: f.region})
}

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage machine images"}
	cmd.AddCommand(newImageImportCmd())
	return cmd
}

func newImageImportCmd() *cobra.Command {
	var cf clientFlags
	var name, description, kernel, initrd, disk, cmdline, machine string
	var uploadOnly bool
	cmd := &cobra.Command{
		Use:   "import --name NAME (--kernel FILE [--initrd FILE] [--disk FILE] | DISK.qcow2|DISK.raw)",
		Short: "Upload an image to the controller and register it as an AMI",
		Long: `Upload an image and register it. An image is either a kernel (with an optional
initrd and disk) booted directly, or a whole-disk qcow2/raw image booted by
firmware. Prints the ami- ID, or with --upload-only the ImageLocation that
'aws ec2 register-image --image-location' accepts.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if disk != "" {
					return errors.New("give the disk either as an argument or with --disk, not both")
				}
				disk = args[0]
			}
			if kernel == "" && disk == "" {
				return errors.New("nothing to import: give --kernel or a disk image")
			}
			if initrd != "" && kernel == "" {
				return errors.New("--initrd needs --kernel")
			}
			if name == "" && !uploadOnly {
				return errors.New("--name is required")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			m := model.ImageManifest{Cmdline: cmdline, Machine: machine, Arch: "x86_64"}
			if kernel != "" {
				if m.Kernel, err = c.UploadFile(ctx, kernel); err != nil {
					return err
				}
			}
			if initrd != "" {
				if m.Initrd, err = c.UploadFile(ctx, initrd); err != nil {
					return err
				}
			}
			if disk != "" {
				if m.DiskFormat, m.DiskSize, err = diskInfo(disk); err != nil {
					return err
				}
				if m.Disk, err = c.UploadFile(ctx, disk); err != nil {
					return err
				}
			}
			loc, err := c.UploadManifest(ctx, m)
			if err != nil {
				return err
			}
			if uploadOnly {
				fmt.Fprintln(cmd.OutOrStdout(), loc)
				return nil
			}
			id, err := c.RegisterImage(ctx, name, description, loc)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVar(&name, "name", "", "image name (unique in the account)")
	cmd.Flags().StringVar(&description, "description", "", "image description")
	cmd.Flags().StringVar(&kernel, "kernel", "", "kernel for direct boot")
	cmd.Flags().StringVar(&initrd, "initrd", "", "initrd for direct boot")
	cmd.Flags().StringVar(&disk, "disk", "", "root disk (qcow2 or raw)")
	cmd.Flags().StringVar(&cmdline, "cmdline", "", "kernel command line (default: console=ttyS0 quiet)")
	cmd.Flags().StringVar(&machine, "machine", "", "machine type: microvm or q35 (default: microvm for direct boot)")
	cmd.Flags().BoolVar(&uploadOnly, "upload-only", false, "upload and print the ImageLocation without registering")
	return cmd
}

// diskInfo tells a qcow2 from a raw disk and returns its virtual size.
func diskInfo(path string) (format string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	var hdr [32]byte
	n, err := io.ReadFull(f, hdr[:])
	if err == nil && string(hdr[:4]) == "QFI\xfb" {
		// A qcow2 overlay needs its backing file, which nodes never get.
		if binary.BigEndian.Uint64(hdr[8:16]) != 0 {
			return "", 0, fmt.Errorf("%s has a backing file: flatten it first (qemu-img convert -O qcow2 %s flat.qcow2)", path, path)
		}
		size := int64(binary.BigEndian.Uint64(hdr[24:32]))
		if size <= 0 {
			return "", 0, fmt.Errorf("%s: qcow2 header gives no disk size", path)
		}
		return "qcow2", size, nil
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if n == 0 || st.Size() == 0 {
		return "", 0, fmt.Errorf("%s is empty", path)
	}
	return "raw", st.Size(), nil
}
