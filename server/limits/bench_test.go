package limits_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ddstore/ddstore/server/limits"
)

// BenchmarkIdleWrapper measures what the idle deadline adds to one RecvMsg
// or SendMsg: the stream underneath returns at once, so "off" is the bare
// interface call and "on" minus "off" is the wrapper's overhead per message.
func BenchmarkIdleWrapper(b *testing.B) {
	for _, bc := range []struct {
		name string
		idle time.Duration
	}{{"off", -1}, {"on", limits.DefaultIdleTimeout}} {
		for _, dir := range []string{"recv", "send"} {
			b.Run(bc.name+"/"+dir, func(b *testing.B) {
				l := limits.New(limits.Config{IdleTimeout: bc.idle}, callerFromMD, isHeavy)
				info := &grpc.StreamServerInfo{FullMethod: mStream, IsClientStream: true, IsServerStream: true}
				m := new(wrapperspb.BytesValue)
				b.ReportAllocs()
				err := l.StreamInterceptor()(nil, newFake("alice"), info, func(_ any, ss grpc.ServerStream) error {
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						var err error
						if dir == "recv" {
							err = ss.RecvMsg(m)
						} else {
							err = ss.SendMsg(m)
						}
						if err != nil {
							return err
						}
					}
					b.StopTimer()
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkLoopbackPingPong measures one message each way on a real gRPC
// stream over 127.0.0.1, with the idle deadline off and on, to put the
// wrapper's cost next to a network round trip.
func BenchmarkLoopbackPingPong(b *testing.B) {
	for _, bc := range []struct {
		name string
		idle time.Duration
	}{{"idle=off", -1}, {"idle=on", limits.DefaultIdleTimeout}} {
		b.Run(bc.name, func(b *testing.B) {
			_, conn := start(b, limits.Config{IdleTimeout: bc.idle}, &handlers{})
			ctx, cancel := context.WithCancel(asCaller(context.Background(), "alice"))
			defer cancel()
			cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, mStream)
			if err != nil {
				b.Fatal(err)
			}
			msg := wrapperspb.Bytes(make([]byte, 64))
			var in wrapperspb.BytesValue
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := cs.SendMsg(msg); err != nil {
					b.Fatal(err)
				}
				if err := cs.RecvMsg(&in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
