package hostctl

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kvloom/kvloom/hostctl/api"
)

// FuzzChunkMeta: a peer's chunk metadata is outside input. An error means
// no chunk info; an accepted one converts back to the same metadata.
func FuzzChunkMeta(f *testing.F) {
	good := &api.ChunkMeta{Key: make([]byte, 16), Model: make([]byte, 32), SaltId: 7, Tokens: []uint32{1, 2, 3}, BasePos: 16,
		Layers: 5, KvHeads: 4, HeadDim: 8, Dtype: "f32"}
	b, _ := proto.Marshal(good)
	f.Add(b)
	fp8 := proto.Clone(good).(*api.ChunkMeta)
	fp8.Dtype, fp8.ScaleK, fp8.ScaleV = "fp8-e4m3", []float32{1, 2, 3, 4, 5}, []float32{1, 1, 1, 1, 1}
	b, _ = proto.Marshal(fp8)
	f.Add(b)
	f.Add([]byte{0x0a, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m api.ChunkMeta
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		info, err := chunkInfoOf(&m)
		if err != nil {
			if info != nil {
				t.Fatalf("error %v with info", err)
			}
			return
		}
		if info.Shape.Bytes(len(info.Tokens)) <= 0 || !info.Shape.DType.Valid() {
			t.Fatalf("accepted an empty or invalid shape %v", info.Shape)
		}
		back, err := chunkInfoOf(chunkMetaOf(info))
		if err != nil || back.Key != info.Key || back.Shape != info.Shape || back.BasePos != info.BasePos || len(back.Tokens) != len(info.Tokens) {
			t.Fatalf("round trip: %v %+v vs %+v", err, back, info)
		}
	})
}
