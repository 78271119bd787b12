// Command gen regenerates the Go code of the book's API (package logv1) from
// proto/proto/log/v1/log.proto without protoc: protocompile parses the file, and the
// CodeGeneratorRequest goes to protoc-gen-go and protoc-gen-go-grpc, both pinned as tools in
// go.mod. Run it from tests/interop: `go generate ./...` (or `go run ./gen`).
//
// With -check it writes nothing and fails when the checked-in files differ (the drift test).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

const file = "log/v1/log.proto"

func main() {
	root := flag.String("proto", "../../proto/proto", "the directory the .proto import paths start from")
	out := flag.String("out", "logv1", "where the generated .go files go")
	check := flag.Bool("check", false, "fail when the files in -out differ from fresh output")
	flag.Parse()
	if err := run(*root, *out, *check); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(root, out string, check bool) error {
	c := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{root}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := c.Compile(context.Background(), file)
	if err != nil {
		return err
	}
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: []string{file},
		Parameter:      proto.String("paths=source_relative"),
		ProtoFile:      withDeps(files[0]),
	}
	stale := 0
	for _, plugin := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		gen, err := runPlugin(plugin, req)
		if err != nil {
			return err
		}
		for _, f := range gen {
			path := filepath.Join(out, filepath.Base(f.GetName()))
			if check {
				have, err := os.ReadFile(path)
				if err != nil || !bytes.Equal(have, []byte(f.GetContent())) {
					fmt.Fprintf(os.Stderr, "gen: %s is stale: run `go generate ./...` in tests/interop\n", path)
					stale++
				}
				continue
			}
			if err := os.WriteFile(path, []byte(f.GetContent()), 0o644); err != nil {
				return err
			}
		}
	}
	if stale > 0 {
		return fmt.Errorf("%d generated file(s) differ from %s", stale, file)
	}
	return nil
}

// withDeps lists fd's imports (transitively) before fd, as protoc does.
func withDeps(fd protoreflect.FileDescriptor) []*descriptorpb.FileDescriptorProto {
	var all []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var visit func(protoreflect.FileDescriptor)
	visit = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := 0; i < imports.Len(); i++ {
			visit(imports.Get(i).FileDescriptor)
		}
		all = append(all, protodesc.ToFileDescriptorProto(f))
	}
	visit(fd)
	return all
}

// runPlugin runs `go tool <plugin>` (the version go.mod pins) on req.
func runPlugin(plugin string, req *pluginpb.CodeGeneratorRequest) ([]*pluginpb.CodeGeneratorResponse_File, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "tool", plugin)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = os.Stderr
	raw, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", plugin, err)
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("%s: %w", plugin, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("%s: %s", plugin, resp.GetError())
	}
	return resp.File, nil
}
