package bitstream

// Image is a parsed accelerator image. (Placeholder: the bitstream issue
// defines the container; nic only needs the type to exist.)
type Image struct {
	Name string
}
