"""One-time AWS set-up for cluster/aws-48gpu.yaml: security group, IAM instance profiles, placement group.

Creates (or reuses, so it is safe to run again) what the Ray cluster launcher config refers to, then writes
a copy of ``cluster/aws-48gpu.yaml`` with every placeholder filled in (cluster/README.md, "Placeholders"):

- security group ``lumos-ray`` in the subnet's VPC: SSH from ``--admin-cidr`` only, plus all traffic between
  members of the group. Ray's own auto-created group would open SSH to 0.0.0.0/0; this one does not.
- IAM roles + instance profiles ``lumos-ray-head`` (cluster/iam/head-policy.json: S3 on the bucket's
  ``lumos/`` prefix, the autoscaler's EC2 rights, PassRole for the worker role) and ``lumos-ray-worker``
  (cluster/iam/worker-policy.json: S3 only), both trusting EC2 (cluster/iam/ec2-trust-policy.json).
- cluster placement group ``lumos-48gpu-cluster`` for the GPU nodes (``--placement-group none``: without).

Usage (standard AWS credentials / ``AWS_PROFILE``; ``AWS_ENDPOINT_URL`` is honoured, the tests use moto)::

    python cluster/aws_setup.py --region us-west-2 --subnet-id subnet-0abc --admin-cidr 203.0.113.0/24 \\
        --bucket my-bucket --ami ami-0123456789abcdef0 --out cluster/aws-48gpu.local.yaml
    ray up -y cluster/aws-48gpu.local.yaml
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from pathlib import Path

CLUSTER = Path(__file__).resolve().parent
TEMPLATE = CLUSTER / "aws-48gpu.yaml"
PLACEHOLDER_ACCOUNT = "123456789012"
PLACEHOLDER_BUCKET = "REPLACE_ME_BUCKET"
SG_NAME = "lumos-ray"
HEAD_PROFILE = "lumos-ray-head"
WORKER_PROFILE = "lumos-ray-worker"
PLACEMENT_GROUP = "lumos-48gpu-cluster"


def policy_document(name: str, bucket: str, account: str) -> str:
    """The JSON policy ``cluster/iam/<name>.json`` with the bucket and account filled in."""
    text = (CLUSTER / "iam" / f"{name}.json").read_text()
    text = text.replace(PLACEHOLDER_BUCKET, bucket).replace(PLACEHOLDER_ACCOUNT, account)
    return json.dumps(json.loads(text))


def ensure_security_group(ec2, vpc_id: str, admin_cidr: str) -> str:
    """Security group allowing SSH from ``admin_cidr`` and all traffic within the group; returns its id."""
    found = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                  {"Name": "group-name", "Values": [SG_NAME]}])["SecurityGroups"]
    if found:
        sg_id = found[0]["GroupId"]
        existing = found[0].get("IpPermissions", [])
    else:
        sg_id = ec2.create_security_group(GroupName=SG_NAME, VpcId=vpc_id,
                                          Description="Lumos Ray cluster: SSH from admin CIDR, intra-group")["GroupId"]
        existing = []
    wanted = [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": admin_cidr}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg_id}]},
    ]
    missing = [rule for rule in wanted if not _has_rule(existing, rule)]
    if missing:
        ec2.authorize_security_group_ingress(GroupId=sg_id, IpPermissions=missing)
    return sg_id


def _has_rule(existing: list[dict], rule: dict) -> bool:
    for perm in existing:
        if perm.get("IpProtocol") != rule["IpProtocol"] or perm.get("FromPort") != rule.get("FromPort"):
            continue
        cidrs = {r["CidrIp"] for r in perm.get("IpRanges", [])}
        groups = {g["GroupId"] for g in perm.get("UserIdGroupPairs", [])}
        if {r["CidrIp"] for r in rule.get("IpRanges", [])} <= cidrs and \
                {g["GroupId"] for g in rule.get("UserIdGroupPairs", [])} <= groups:
            return True
    return False


def ensure_instance_profile(iam, name: str, policy: str, trust: str) -> str:
    """Role ``name`` (trusting EC2, inline policy ``policy``) inside instance profile ``name``; returns its ARN."""
    try:
        iam.get_role(RoleName=name)
    except iam.exceptions.NoSuchEntityException:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust,
                        Description="Lumos on Ray (cluster/aws_setup.py)")
    iam.put_role_policy(RoleName=name, PolicyName="lumos", PolicyDocument=policy)
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    if name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return profile["Arn"]


def ensure_placement_group(ec2, name: str) -> None:
    """The cluster placement group the GPU node type names (an existing one is kept)."""
    from botocore.exceptions import ClientError

    try:
        ec2.create_placement_group(GroupName=name, Strategy="cluster")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "InvalidPlacementGroup.Duplicate":
            raise


def fill_template(template: str, *, region: str, zone: str, subnet_id: str, sg_id: str, ami: str,
                  account: str, placement_group: str | None) -> str:
    """aws-48gpu.yaml with its placeholders replaced (comments kept); ``placement_group=None`` drops it."""
    if placement_group is None:
        template = re.sub(r"(?m)^[ \t]*# Co-locate[^\n]*\n[ \t]*Placement:\n[ \t]*GroupName: \S+\n", "", template)
    else:
        template = template.replace(f"GroupName: {PLACEMENT_GROUP}", f"GroupName: {placement_group}")
    text = template.replace("ami-REPLACE_ME", ami).replace("subnet-REPLACE_ME", subnet_id)
    text = text.replace("sg-REPLACE_ME", sg_id).replace(f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:", f"arn:aws:iam::{account}:")
    text = re.sub(r"(?m)^(\s*region:\s*)\S+", rf"\g<1>{region}", text)
    text = re.sub(r"(?m)^(\s*availability_zone:\s*)\S+", rf"\g<1>{zone}", text)
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--region", required=True, help="AWS region of the cluster, e.g. us-west-2")
    p.add_argument("--subnet-id", required=True, help="subnet for every node (its AZ becomes the cluster's AZ)")
    p.add_argument("--admin-cidr", required=True, help="the only network allowed to SSH in, e.g. 203.0.113.0/24")
    p.add_argument("--bucket", required=True, help="S3 bucket; the cluster may use s3://BUCKET/lumos/* only")
    p.add_argument("--ami", required=True, help="GPU AMI with docker + NVIDIA driver (AWS Deep Learning Base AMI)")
    p.add_argument("--placement-group", default=PLACEMENT_GROUP,
                   help="cluster placement group for the GPU nodes (created if absent); 'none' to go without")
    p.add_argument("--out", default=str(CLUSTER / "aws-48gpu.local.yaml"), help="filled launcher config to write")
    args = p.parse_args(argv)
    try:
        net = ipaddress.ip_network(args.admin_cidr, strict=False)
    except ValueError:
        p.error(f"--admin-cidr {args.admin_cidr!r} is not a CIDR block")
    if net.prefixlen == 0:
        p.error("--admin-cidr must not be the whole internet (0.0.0.0/0): the dashboard is reached over SSH")
    if not re.fullmatch(r"ami-[0-9a-f]{8,17}", args.ami):
        p.error(f"--ami {args.ami!r} is not an AMI id (ami-...)")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", args.bucket):
        p.error(f"--bucket {args.bucket!r} is not an S3 bucket name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import boto3

    session = boto3.session.Session(region_name=args.region)
    ec2, iam = session.client("ec2"), session.client("iam")
    account = session.client("sts").get_caller_identity()["Account"]
    subnets = ec2.describe_subnets(SubnetIds=[args.subnet_id])["Subnets"]
    vpc_id, zone = subnets[0]["VpcId"], subnets[0]["AvailabilityZone"]

    sg_id = ensure_security_group(ec2, vpc_id, args.admin_cidr)
    trust = policy_document("ec2-trust-policy", args.bucket, account)
    head_arn = ensure_instance_profile(iam, HEAD_PROFILE, policy_document("head-policy", args.bucket, account), trust)
    worker_arn = ensure_instance_profile(iam, WORKER_PROFILE, policy_document("worker-policy", args.bucket, account),
                                         trust)
    placement = None if args.placement_group == "none" else args.placement_group
    if placement:
        ensure_placement_group(ec2, placement)

    filled = fill_template(TEMPLATE.read_text(), region=args.region, zone=zone, subnet_id=args.subnet_id,
                           sg_id=sg_id, ami=args.ami, account=account, placement_group=placement)
    Path(args.out).write_text(filled)
    print(f"security group {sg_id} (SSH from {args.admin_cidr} only) in {vpc_id}, zone {zone}")
    print(f"instance profiles: {head_arn}, {worker_arn}")
    print(f"wrote {args.out}; next: ray get-auth-token --generate && ray up -y {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
