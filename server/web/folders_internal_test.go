package web

import (
	"reflect"
	"testing"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

func TestCrumbsAndSubfolders(t *testing.T) {
	if got, want := crumbs("a/b/c"), []folder{{Label: "a/", Prefix: "a/"}, {Label: "b/", Prefix: "a/b/"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("crumbs(a/b/c) = %+v, want %+v", got, want)
	}
	if got := crumbs("top"); got != nil {
		t.Errorf("crumbs(top) = %+v, want none", got)
	}
	files := []*pb.FileInfo{{Name: "a/b/1"}, {Name: "a/b/2"}, {Name: "a/c/d/3"}, {Name: "a/top"}, {Name: "b/4"}}
	want := []folder{{Label: "b/", Prefix: "a/b/", Files: 2}, {Label: "c/", Prefix: "a/c/", Files: 1}}
	if got := subfolders("a/", files); !reflect.DeepEqual(got, want) {
		t.Errorf("subfolders(a/) = %+v, want %+v", got, want)
	}
	if got := subfolders("", files[:1]); len(got) != 1 || got[0].Prefix != "a/" {
		t.Errorf("subfolders of everything = %+v", got)
	}
}
