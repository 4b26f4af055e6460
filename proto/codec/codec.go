// Package codec is the gRPC codec of ddstore's services: protobuf, as
// grpc-go's default codec, except that the bytes of a chunk are not copied
// on their way through.
//
// A message that carries a chunk in a singular field of type
// ddstore.v1.Chunk (Download's answers, Upload's requests, the nodes'
// PutChunks and GetChunk) is sent as its other fields followed by the
// chunk's data as the sender holds it: the default codec would first copy
// the data into a marshalled buffer. A message that arrives is copied once
// out of the transport's buffers into a buffer of its own, and its chunk
// data is a slice of that buffer instead of a second copy.
//
// On the wire nothing changes: the chunk field is sent in two parts (its
// small fields, then its data), which protobuf's rules merge into one
// message, so any protobuf decoder reads what the default codec would have
// sent. As with grpc-go's default codec, a sender must not change a message
// after sending it: its chunk data may be read after Send returns.
package codec

import (
	"bytes"
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Name is the codec's name on the wire: it is protobuf.
const Name = grpcproto.Name

// MinZeroCopy is the chunk data size from which the codec avoids copies;
// smaller messages go through the default codec.
const MinZeroCopy = 32 << 10

// chunkType and dataField name the message whose data is not copied and
// its bytes field (see ddstore.proto: Chunk.data = 4).
const (
	chunkType                  = protoreflect.FullName("ddstore.v1.Chunk")
	dataField protowire.Number = 4
)

// Codec is the codec; use it on both ends (grpc.ForceServerCodecV2,
// grpc.ForceCodecV2).
type Codec struct {
	std encoding.CodecV2 // grpc-go's protobuf codec, for everything else
}

var _ encoding.CodecV2 = (*Codec)(nil)

// New returns the codec.
func New() *Codec {
	return &Codec{std: encoding.GetCodecV2(grpcproto.Name)}
}

// Name returns "proto".
func (c *Codec) Name() string { return Name }

// Marshal encodes v; chunk data of MinZeroCopy bytes or more is referenced,
// not copied.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("codec: cannot marshal %T: not a protobuf message", v)
	}
	rm := m.ProtoReflect()
	fd := chunkField(rm.Descriptor())
	if fd == nil || !rm.Has(fd) {
		return c.std.Marshal(v)
	}
	data := rm.Get(fd).Message().Get(fd.Message().Fields().ByNumber(dataField)).Bytes()
	if len(data) < MinZeroCopy {
		return c.std.Marshal(v)
	}
	head, err := marshalHead(rm, fd)
	if err != nil {
		return nil, err
	}
	// The data goes as a second occurrence of the chunk field, which a
	// decoder merges into the first.
	var inner [2 * binaryMaxVarint]byte
	tail := protowire.AppendVarint(protowire.AppendTag(inner[:0], dataField, protowire.BytesType), uint64(len(data)))
	head = protowire.AppendTag(head, fd.Number(), protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(tail)+len(data)))
	head = append(head, tail...)
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(data)}, nil
}

const binaryMaxVarint = 10

// marshalHead encodes rm without its chunk's data: the same message with a
// chunk that has every field but data.
func marshalHead(rm protoreflect.Message, fd protoreflect.FieldDescriptor) ([]byte, error) {
	head := rm.New()
	rm.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if f != fd {
			head.Set(f, v)
		}
		return true
	})
	head.SetUnknown(rm.GetUnknown())
	chunk, hc := rm.Get(fd).Message(), head.Mutable(fd).Message()
	chunk.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if f.Number() != dataField {
			hc.Set(f, v)
		}
		return true
	})
	hc.SetUnknown(chunk.GetUnknown())
	b, err := proto.Marshal(head.Interface())
	if err != nil {
		return nil, fmt.Errorf("codec: marshal %s: %w", rm.Descriptor().FullName(), err)
	}
	return b, nil
}

// Unmarshal decodes data into v. A message with a chunk field is copied
// once into a buffer of its own, which its chunk data then shares.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: cannot unmarshal into %T: not a protobuf message", v)
	}
	fd := chunkField(m.ProtoReflect().Descriptor())
	if fd == nil || data.Len() < MinZeroCopy {
		return c.std.Unmarshal(data, v)
	}
	return UnmarshalShared(materialize(data), m)
}

// materialize copies data into one new buffer, without first zeroing it as
// data.Materialize does (bytes.Join allocates without clearing).
func materialize(data mem.BufferSlice) []byte {
	parts := make([][]byte, len(data))
	for i, b := range data {
		parts[i] = b.ReadOnlyData()
	}
	return bytes.Join(parts, nil)
}

// UnmarshalShared is proto.Unmarshal(buf, m), except that the data of a
// chunk in a singular Chunk field of m is a slice of buf, not a copy: buf
// must not change while m is in use.
func UnmarshalShared(buf []byte, m proto.Message) error {
	rm := m.ProtoReflect()
	fd := chunkField(rm.Descriptor())
	if fd == nil {
		return proto.Unmarshal(buf, m)
	}
	rest, shared, ok := split(buf, fd.Number())
	if !ok {
		// Malformed, or not as expected: the standard decoder says what.
		return proto.Unmarshal(buf, m)
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	if len(shared) > 0 {
		chunk := rm.Mutable(fd).Message()
		chunk.Set(chunk.Descriptor().Fields().ByNumber(dataField), protoreflect.ValueOfBytes(shared))
	}
	return nil
}

// split walks the top-level fields of buf and returns them with every
// chunk data field taken out of the chunk field numbered num (rest), and
// the last such data, which protobuf's last-one-wins rule makes the
// chunk's (shared, a slice of buf). ok is false when buf is not well-formed
// protobuf; the caller then lets the standard decoder report it.
func split(buf []byte, num protowire.Number) (rest, shared []byte, ok bool) {
	rest = make([]byte, 0, 256)
	for b := buf; len(b) > 0; {
		f, ok := nextField(&b)
		if !ok {
			return nil, nil, false
		}
		if f.num != num || f.typ != protowire.BytesType {
			rest = append(rest, f.whole...)
			continue
		}
		kept := make([]byte, 0, 64)
		for inner := f.bytes(); len(inner) > 0; {
			g, ok := nextField(&inner)
			if !ok {
				return nil, nil, false
			}
			if g.num == dataField && g.typ == protowire.BytesType {
				shared = g.bytes()
			} else {
				kept = append(kept, g.whole...)
			}
		}
		rest = protowire.AppendTag(rest, num, protowire.BytesType)
		rest = protowire.AppendBytes(rest, kept)
	}
	return rest, shared, true
}

// field is one encoded protobuf field: its number, wire type, and bytes
// (whole: tag and value).
type field struct {
	num   protowire.Number
	typ   protowire.Type
	whole []byte
	tag   int // length of the tag in whole
}

// bytes returns the contents of a length-delimited field.
func (f field) bytes() []byte {
	v, _ := protowire.ConsumeBytes(f.whole[f.tag:])
	return v
}

// nextField takes the first field off *b; ok is false when it is malformed.
func nextField(b *[]byte) (f field, ok bool) {
	num, typ, tl := protowire.ConsumeTag(*b)
	if tl < 0 {
		return f, false
	}
	vl := protowire.ConsumeFieldValue(num, typ, (*b)[tl:])
	if vl < 0 {
		return f, false
	}
	f = field{num: num, typ: typ, whole: (*b)[:tl+vl], tag: tl}
	*b = (*b)[tl+vl:]
	return f, true
}

// chunkField returns md's singular field of type Chunk, if it has one.
func chunkField(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	fields := md.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Kind() == protoreflect.MessageKind && f.Cardinality() != protoreflect.Repeated && f.Message().FullName() == chunkType {
			return f
		}
	}
	return nil
}
